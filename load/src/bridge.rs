//! The bridge under test: started as its own process (so its memory and CPU are its own),
//! read through `/proc` and its health endpoint.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// A running bridge process.
pub struct Bridge {
    child: Child,
    /// Its Socket.IO / HTTP address.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: u32,
}

impl Bridge {
    /// Starts `bin` with `env` on a free port and waits until it listens.
    pub async fn start(bin: &Path, env: &[(String, String)]) -> anyhow::Result<Bridge> {
        let mut child = Command::new(bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the bridge exited at once")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Ok(log) = serde_json::from_str::<serde_json::Value>(&line)
                    && log["message"] == "listening"
                {
                    return log["addr"].as_str().context("addr")?.parse::<SocketAddr>().context("addr");
                }
            }
            bail!("the bridge exited before listening")
        })
        .await
        .context("the bridge did not listen within 30 s")??;
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Bridge { child, addr, pid })
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok((200, _)) = self.get("/health/ready").await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the bridge was not ready within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Records the bridge has consumed (from `/health`).
    pub async fn records_consumed(&self) -> anyhow::Result<u64> {
        let (_, body) = self.get("/health").await?;
        let health: serde_json::Value = serde_json::from_str(&body)?;
        health["kafka"]["recordsConsumed"].as_u64().context("recordsConsumed")
    }

    /// A plain HTTP/1.1 GET: status and body.
    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut conn = tokio::net::TcpStream::connect(self.addr).await?;
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut raw)).await??;
        let status = raw.get(9..12).context("short response")?.parse()?;
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, body))
    }

    /// Stops it with SIGTERM (it drains) and waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status().await;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        Ok(())
    }
}

/// A process's resident memory (KiB) from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A process's CPU time so far (user + system), in seconds, from `/proc/<pid>/stat`.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}
