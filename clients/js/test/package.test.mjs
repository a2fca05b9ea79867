// What a storefront developer does: `npm pack` here, install the tarball into an empty
// project, and get a typed socket and the helper (type-checked with strict TypeScript, and
// imported by Node).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

const pkgDir = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8"));
const tsc = path.join(pkgDir, "node_modules", "typescript", "bin", "tsc");
const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

test("the packed tarball installs into an empty project and gives a typed socket and the helper", { timeout: 180_000 }, (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "rb-client-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const tarball = JSON.parse(run("npm", ["pack", "--json", "--pack-destination", dir], pkgDir))[0].filename;
  const project = path.join(dir, "app");
  run("mkdir", ["-p", project], dir);
  writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  // socket.io-client comes in as the package's peer dependency.
  run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", path.join(dir, tarball)], project);
  writeFileSync(
    path.join(project, "app.ts"),
    `import { io } from "socket.io-client";
import { resumable, type BridgeSocket } from "@realtime-bridge/client";
const socket: BridgeSocket = io("http://localhost:3009", { autoConnect: false, auth: { token: "t" } });
socket.on("inventory:updated", (e) => console.log(e.data.productId.toUpperCase(), e.data.stock + 1));
// @ts-expect-error: the payload is typed
socket.on("inventory:updated", (e) => e.data.nope);
const c = resumable("http://localhost:3009", "t", { autoConnect: false });
c.on("order:created", (e) => console.log(e.data.orderId));
c.close();
`,
  );
  writeFileSync(
    path.join(project, "tsconfig.json"),
    JSON.stringify({ compilerOptions: { strict: true, module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", lib: ["ES2022", "DOM"], noEmit: true, types: [] }, files: ["app.ts"] }),
  );
  run(process.execPath, [tsc, "-p", "."], project);
  const exported = run(
    process.execPath,
    ["--input-type=module", "-e", `import * as m from "@realtime-bridge/client"; console.log(JSON.stringify({ resumable: typeof m.resumable, Resumable: typeof m.Resumable, version: m.CONTRACT_VERSION }));`],
    project,
  );
  assert.deepEqual(JSON.parse(exported), { resumable: "function", Resumable: "function", version: pkg.version });
});

test("the package's version is the service's", () => {
  const cargo = readFileSync(fileURLToPath(new URL("../../../Cargo.toml", import.meta.url)), "utf8");
  assert.equal(pkg.version, /^version = "(.*)"$/m.exec(cargo)[1]);
});
