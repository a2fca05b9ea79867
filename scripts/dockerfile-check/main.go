// dockerfile-check executes a Dockerfile the way a builder would, without a container
// engine (none runs on the project machines): each stage gets a scratch root holding
// exactly what its COPY lines bring (after .dockerignore, with Docker's own parser and
// ignore matcher), its RUN steps run there in order and the first that fails fails the
// check; package installs are not run (the machine is not the image) but every package
// they name must exist in this Debian release. Then the last stage's contract: it runs
// as a non-root uid, its ENTRYPOINT + CMD start from the copied path, its HEALTHCHECK
// answers, and its STOPSIGNAL stops it cleanly.
//
// A stamp of everything the build reads is kept in the cache directory: when nothing
// changed since the last passing check, it passes at once.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

func main() {
	context := flag.String("context", ".", "the build context")
	cache := flag.String("cache", "", "where the scratch roots, the build's target dir and the stamp live")
	flag.Parse()
	if *cache == "" {
		fail("--cache is required")
	}
	if err := run(*context, *cache); err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "dockerfile-check: "+msg)
	os.Exit(1)
}

func step(format string, args ...any) { fmt.Printf("dockerfile-check: "+format+"\n", args...) }

func run(contextDir, cache string) error {
	contextDir, err := filepath.Abs(contextDir)
	if err != nil {
		return err
	}
	stages, err := parseDockerfile(filepath.Join(contextDir, "Dockerfile"))
	if err != nil {
		return err
	}
	ctx, err := newContext(contextDir)
	if err != nil {
		return err
	}
	stamp, err := ctx.stamp(stages)
	if err != nil {
		return err
	}
	stampFile := filepath.Join(cache, "stamp")
	if old, err := os.ReadFile(stampFile); err == nil && string(old) == stamp {
		step("nothing the build reads changed since the last passing check (%s)", stamp[:12])
		return nil
	}
	b := &builder{ctx: ctx, cache: cache, roots: map[string]string{}}
	var final *stageState
	for i := range stages {
		if final, err = b.stage(&stages[i], i); err != nil {
			return fmt.Errorf("stage %q: %w", stages[i].Name, err)
		}
	}
	if err := checkRuntime(final); err != nil {
		return fmt.Errorf("runtime stage %q: %w", final.name, err)
	}
	if err := os.WriteFile(stampFile, []byte(stamp), 0o644); err != nil {
		return err
	}
	step("passed")
	return nil
}

func parseDockerfile(file string) ([]instructions.Stage, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ast, err := parser.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	stages, _, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return stages, nil
}

// buildContext is what a builder sends: the context directory minus .dockerignore.
type buildContext struct {
	dir     string
	ignored *patternmatcher.PatternMatcher
}

func newContext(dir string) (*buildContext, error) {
	var patterns []string
	if f, err := os.Open(filepath.Join(dir, ".dockerignore")); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf(".dockerignore: %w", err)
		}
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	return &buildContext{dir: dir, ignored: pm}, nil
}

func (c *buildContext) excluded(rel string) bool {
	if rel == "." || rel == "" {
		return false
	}
	//nolint:staticcheck // the same matcher docker's builder uses for the context
	ex, _ := c.ignored.MatchesOrParentMatches(filepath.ToSlash(rel))
	return ex
}

// files lists the context files under rel (a file or a directory), as a builder sends them.
func (c *buildContext) files(rel string) ([]string, error) {
	rel = path.Clean(strings.TrimPrefix(rel, "/"))
	info, err := os.Lstat(filepath.Join(c.dir, rel))
	if err != nil || c.excluded(rel) {
		return nil, fmt.Errorf("COPY %s: not in the build context (missing, or excluded by .dockerignore)", rel)
	}
	if !info.IsDir() {
		return []string{rel}, nil
	}
	var out []string
	err = filepath.WalkDir(filepath.Join(c.dir, rel), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(c.dir, p)
		if c.excluded(r) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// stamp hashes the Dockerfile, .dockerignore, this tool and every file a context COPY brings.
func (c *buildContext) stamp(stages []instructions.Stage) (string, error) {
	h := sha256.New()
	self, _ := filepath.Glob(filepath.Join(c.dir, "scripts/dockerfile-check/*"))
	seen := append([]string{"Dockerfile", ".dockerignore"}, relAll(c.dir, self)...)
	for _, s := range stages {
		for _, cmd := range s.Commands {
			cp, ok := cmd.(*instructions.CopyCommand)
			if !ok || cp.From != "" {
				continue
			}
			for _, src := range cp.SourcePaths {
				files, err := c.files(src)
				if err != nil {
					return "", err
				}
				seen = append(seen, files...)
			}
		}
	}
	sort.Strings(seen)
	for _, rel := range slices.Compact(seen) {
		data, err := os.ReadFile(filepath.Join(c.dir, rel))
		if err != nil && !os.IsNotExist(err) {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", rel, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func relAll(dir string, paths []string) []string {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		if r, err := filepath.Rel(dir, p); err == nil {
			out = append(out, r)
		}
	}
	return out
}

type builder struct {
	ctx   *buildContext
	cache string
	roots map[string]string // stage name → scratch root
}

// stageState is what a stage leaves: its root and the image config its commands set.
type stageState struct {
	name, root, workdir, user, stopSignal string
	env                                   []string
	entrypoint, cmd, health               []string
	expose                                []string
	users                                 map[string]string // names → uid from useradd steps
}

func (b *builder) stage(s *instructions.Stage, index int) (*stageState, error) {
	name := s.Name
	if name == "" {
		name = strconv.Itoa(index)
	}
	// Under the system's temp dir, not the cache: the image's non-root user must be able to
	// reach the runtime stage's files (a cache under /root is not traversable for it).
	root := filepath.Join(os.TempDir(), "realtime-bridge-dockerfile-check", name)
	if err := clearRoot(root); err != nil {
		return nil, err
	}
	b.roots[name] = root
	st := &stageState{name: name, root: root, workdir: "/", users: map[string]string{}}
	step("stage %s (FROM %s) in %s", name, s.BaseName, root)
	for _, cmd := range s.Commands {
		if err := b.command(st, cmd); err != nil {
			return nil, fmt.Errorf("%s: %w", strings.TrimSpace(fmt.Sprint(cmd)), err)
		}
	}
	return st, nil
}

// clearRoot empties a scratch root (the build's target directory is a link into the
// cache, so cargo keeps what it compiled between checks).
func clearRoot(root string) error {
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	return os.Chmod(filepath.Dir(root), 0o755)
}

func (b *builder) command(st *stageState, cmd instructions.Command) error {
	switch c := cmd.(type) {
	case *instructions.WorkdirCommand:
		st.workdir = path.Join(st.workdir, c.Path)
		return os.MkdirAll(st.inRoot(st.workdir), 0o755)
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			st.env = append(st.env, kv.Key+"="+kv.Value)
		}
	case *instructions.ArgCommand:
		for _, a := range c.Args {
			if a.Value != nil {
				st.env = append(st.env, a.Key+"="+*a.Value)
			}
		}
	case *instructions.CopyCommand:
		return b.copy(st, c)
	case *instructions.RunCommand:
		return b.runStep(st, c)
	case *instructions.UserCommand:
		st.user = c.User
	case *instructions.EntrypointCommand:
		st.entrypoint = shellForm(c.ShellDependantCmdLine)
		st.cmd = nil // Docker resets CMD when ENTRYPOINT is set
	case *instructions.CmdCommand:
		st.cmd = shellForm(c.ShellDependantCmdLine)
	case *instructions.HealthCheckCommand:
		st.health = c.Health.Test
	case *instructions.ExposeCommand:
		st.expose = append(st.expose, c.Ports...)
	case *instructions.StopSignalCommand:
		st.stopSignal = c.Signal
	case *instructions.LabelCommand, *instructions.MaintainerCommand:
	default:
		return fmt.Errorf("an instruction this check cannot execute (%T): teach it", cmd)
	}
	return nil
}

func shellForm(c instructions.ShellDependantCmdLine) []string {
	if c.PrependShell {
		return []string{"/bin/sh", "-c", strings.Join(c.CmdLine, " ")}
	}
	return c.CmdLine
}

func (st *stageState) inRoot(p string) string {
	if !path.IsAbs(p) {
		p = path.Join(st.workdir, p)
	}
	return filepath.Join(st.root, filepath.FromSlash(p))
}

func (b *builder) copy(st *stageState, c *instructions.CopyCommand) error {
	dest := c.DestPath
	toDir := strings.HasSuffix(dest, "/") || len(c.SourcePaths) > 1
	for _, src := range c.SourcePaths {
		var from, base string
		var files []string
		if c.From != "" {
			root, ok := b.roots[c.From]
			if !ok {
				return fmt.Errorf("no earlier stage %q", c.From)
			}
			from, base, files = root, path.Clean(src), []string{strings.TrimPrefix(path.Clean(src), "/")}
			if _, err := os.Stat(filepath.Join(root, files[0])); err != nil {
				return fmt.Errorf("%s is not in stage %s: %w", src, c.From, err)
			}
		} else {
			var err error
			if files, err = b.ctx.files(src); err != nil {
				return err
			}
			from, base = b.ctx.dir, path.Clean(strings.TrimPrefix(src, "/"))
		}
		for _, f := range files {
			target := st.inRoot(dest)
			if rel, _ := filepath.Rel(strings.TrimPrefix(base, "/"), strings.TrimPrefix(f, "/")); rel != "." {
				target = filepath.Join(target, rel) // a directory's contents go under dest
			} else if toDir {
				target = filepath.Join(target, path.Base(f))
			}
			if err := copyFile(filepath.Join(from, f), target); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

var (
	aptInstall = regexp.MustCompile(`apt-get\s+install\s+([^&;|]*)`)
	useradd    = regexp.MustCompile(`useradd\s[^&;|]*--uid\s+(\d+)[^&;|]*?\s([a-z_][a-z0-9_-]*)\s*(?:$|&&|;)`)
)

// runStep runs a RUN line in the stage's root, or — for a system step (apt-get, useradd)
// that would change this machine rather than an image — checks what it names instead.
func (b *builder) runStep(st *stageState, c *instructions.RunCommand) error {
	line := strings.Join(c.CmdLine, " ")
	if strings.Contains(line, "apt-get") || strings.Contains(line, "useradd") {
		return systemStep(st, line)
	}
	step("RUN %s", line)
	argv := shellForm(c.ShellDependantCmdLine)
	if !c.PrependShell {
		argv = c.CmdLine
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = st.inRoot(st.workdir)
	cmd.Env = append(buildEnv(), st.env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// The build's target directory lives in the cache, so that an unchanged dependency
	// tree is not compiled again on every check (a real builder would use its layer cache).
	if target := filepath.Join(cmd.Dir, "target"); !exists(target) {
		shared := filepath.Join(b.cache, "target-"+st.name)
		if err := os.MkdirAll(shared, 0o755); err != nil {
			return err
		}
		if err := os.Symlink(shared, target); err != nil {
			return err
		}
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("the step failed: %w", err)
	}
	return nil
}

// buildEnv is this machine's environment minus what would move the build's output or
// change its flags, which the image's build does not have (the test command sets
// CARGO_TARGET_DIR, for one).
func buildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "CARGO_TARGET_DIR" || name == "CARGO_BUILD_TARGET_DIR" || name == "RUSTFLAGS" ||
			name == "CARGO_ENCODED_RUSTFLAGS" || strings.HasPrefix(name, "CARGO_PROFILE_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func systemStep(st *stageState, line string) error {
	for _, m := range aptInstall.FindAllStringSubmatch(line, -1) {
		for _, pkg := range strings.Fields(m[1]) {
			if strings.HasPrefix(pkg, "-") {
				continue
			}
			if out, err := exec.Command("apt-cache", "show", "--no-all-versions", pkg).CombinedOutput(); err != nil {
				return fmt.Errorf("apt-get install %s: no such package in this Debian release: %s", pkg, strings.TrimSpace(string(out)))
			}
		}
		step("package install checked (not run): %s", strings.Join(slices.DeleteFunc(strings.Fields(m[1]), func(f string) bool { return strings.HasPrefix(f, "-") }), " "))
	}
	for _, m := range useradd.FindAllStringSubmatch(line, -1) {
		st.users[m[2]] = m[1]
		step("useradd checked (not run): %s uid %s", m[2], m[1])
	}
	return nil
}

// checkRuntime starts the last stage's ENTRYPOINT + CMD from its root as its USER and
// checks the contract the deployment files rely on.
func checkRuntime(st *stageState) (err error) {
	uid, gid, err := st.uidGid()
	if err != nil {
		return err
	}
	argv := append(slices.Clone(st.entrypoint), st.cmd...)
	if len(argv) == 0 || !path.IsAbs(argv[0]) {
		return fmt.Errorf("ENTRYPOINT/CMD must name the binary by its absolute path, got %q", argv)
	}
	argv[0] = st.inRoot(argv[0])
	if info, err := os.Stat(argv[0]); err != nil || info.Mode().Perm()&0o001 == 0 {
		return fmt.Errorf("%s is not an executable anyone may run (the image runs as uid %d)", argv[0], uid)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	// Only what the image's own config sets, plus the least a production start needs: the
	// calling shell's variables (REDIS_URL, say) are not the container's.
	env := append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, st.env...)
	env = append(env, runtimeConfig(port)...)
	if !slices.ContainsFunc(st.expose, func(p string) bool { return strings.TrimSuffix(p, "/tcp") == portOf(st.env) }) {
		return fmt.Errorf("EXPOSE %v does not include the PORT the image sets (%s)", st.expose, portOf(st.env))
	}
	proc := asUser(argv, env, uid, gid)
	// The service's own log is shown only when the check fails.
	var output bytes.Buffer
	proc.Stdout, proc.Stderr = &output, &output
	defer func() {
		if err != nil {
			os.Stderr.Write(output.Bytes())
		}
	}()
	if err := proc.Start(); err != nil {
		return fmt.Errorf("the entrypoint did not start: %w", err)
	}
	defer proc.Process.Kill()
	step("started %q as uid %d on port %d", argv, uid, port)
	if err := waitHealthy(st, env, uid, gid); err != nil {
		return err
	}
	if err := checkUid(proc.Process.Pid, uid); err != nil {
		return err
	}
	return stopCleanly(st, proc)
}

func (st *stageState) uidGid() (int, int, error) {
	if st.user == "" {
		return 0, 0, fmt.Errorf("no USER: the image would run as root")
	}
	u, g, _ := strings.Cut(st.user, ":")
	if id, ok := st.users[u]; ok {
		u = id
	}
	uid, err := strconv.Atoi(u)
	if err != nil {
		return 0, 0, fmt.Errorf("USER %s: use a numeric uid (Kubernetes' runAsNonRoot cannot verify a name)", st.user)
	}
	gid := uid
	if g != "" {
		if gid, err = strconv.Atoi(g); err != nil {
			return 0, 0, fmt.Errorf("USER %s: numeric gid expected", st.user)
		}
	}
	if uid == 0 {
		return 0, 0, fmt.Errorf("USER %s runs as root", st.user)
	}
	for name, id := range st.users {
		if u != id && st.user == name {
			return 0, 0, fmt.Errorf("USER %s does not match the uid useradd gave (%s)", st.user, id)
		}
	}
	return uid, gid, nil
}

// runtimeConfig is the least a production start needs (what compose and the manifest set).
func runtimeConfig(port int) []string {
	return []string{
		"PORT=" + strconv.Itoa(port),
		"METRICS_PORT=0",
		"JWT_SECRET=dockerfile-check-secret-at-least-32-bytes-long",
		"KAFKA_BROKERS=127.0.0.1:9", // nothing listens: liveness must not depend on Kafka
		"CORS_ORIGINS=https://shop.example.com",
		"SHUTDOWN_DELAY_SECS=0",
	}
}

func portOf(env []string) string {
	port := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PORT="); ok {
			port = v
		}
	}
	return port
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func asUser(argv, env []string, uid, gid int) *exec.Cmd {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = "/"
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	return cmd
}

func waitHealthy(st *stageState, env []string, uid, gid int) error {
	test := st.health
	if len(test) < 2 || test[0] != "CMD" {
		return fmt.Errorf("HEALTHCHECK must be an exec-form CMD (no shell in the image), got %q", test)
	}
	argv := slices.Clone(test[1:])
	argv[0] = st.inRoot(argv[0])
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := asUser(argv, env, uid, gid).CombinedOutput()
		if err == nil {
			step("HEALTHCHECK %q answered", test[1:])
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("HEALTHCHECK %q never passed: %v %s", test[1:], err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func checkUid(pid, uid int) error {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			if f[1] != strconv.Itoa(uid) {
				return fmt.Errorf("the process runs as uid %s, not %d", f[1], uid)
			}
			if os.Geteuid() != 0 {
				step("not root here: ran as uid %s, the image's uid %d is checked by USER only", f[1], uid)
			}
			return nil
		}
	}
	return fmt.Errorf("no Uid line in /proc/%d/status", pid)
}

func stopCleanly(st *stageState, proc *exec.Cmd) error {
	sig := syscall.SIGTERM // Docker's default
	if st.stopSignal != "" && st.stopSignal != "SIGTERM" {
		return fmt.Errorf("STOPSIGNAL %s: the service drains on SIGTERM", st.stopSignal)
	}
	if err := proc.Process.Signal(sig); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- proc.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("after SIGTERM: %w", err)
		}
		step("stopped by SIGTERM, exit 0")
		return nil
	case <-time.After(40 * time.Second):
		return fmt.Errorf("still running 40 s after SIGTERM")
	}
}
