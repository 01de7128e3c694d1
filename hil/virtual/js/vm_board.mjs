// The virtual board: the MicroPython VM's REPL on a serial line (a pseudo-terminal's master
// side, an inherited file descriptor), with a filesystem mirrored to a host directory.
//
// usage: node vm_board.mjs --root DIR [--fd N] [--sim JSON] [--no-main]
//   N: the pty master's descriptor (default 3); JSON: the simulated hardware (vhal.py).
// - At boot (and at a soft reset from the friendly REPL) the board runs its boot.py and
//   main.py, as a board does, with ``hal`` = hil/virtual/vhal.py (simulated battery and lock
//   pin; MQTT bridged as JSON lines on stdout/stdin to the host, see simhal.BridgeClient).
//   main.py hands its loop over with hal.schedule(step); the board steps it from the event
//   loop until Ctrl-C on the serial line interrupts it (KeyboardInterrupt, then the REPL).
// - The VM's filesystem root "/" starts as a copy of DIR (system dirs tmp/home/dev/proc aside)
//   and is written back to DIR after every raw-REPL execution, soft reset and exit, so the host
//   sees what `mpremote fs cp` put there, and a restart (hard reset) keeps it, like flash.
// - The event-driven REPL of the WebAssembly port handles the raw REPL but not the raw-paste
//   request (Ctrl-E 'A' Ctrl-A): that request is answered here with "R\x00" (raw paste not
//   supported), and mpremote falls back to the plain raw REPL.
// - A soft reset (Ctrl-D at an empty prompt) loads a fresh VM on the same filesystem, prints
//   "MPY: soft reboot" and returns to the REPL mode it was in, as a board does.
// - errno_shim.py maps the port's Emscripten errno numbers to MicroPython's (ENOENT = 2 ...).
// - "ready\n" on stdout once the REPL is up; closing stdin stops it (files saved first).
import fs from "node:fs";
import tty from "node:tty";
import readline from "node:readline";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const require = createRequire(import.meta.url);
const modulePath = process.env.NGRID_MICROPYTHON_MJS ||
  require.resolve("@micropython/micropython-webassembly-pyscript/micropython.mjs",
                  { paths: [process.cwd()] });
const { loadMicroPython } = await import(pathToFileURL(modulePath).href);

const args = process.argv.slice(2);
const root = path.resolve(args[args.indexOf("--root") + 1]);
const mainEnabled = !args.includes("--no-main");
const sim = args.includes("--sim") ? args[args.indexOf("--sim") + 1] : "{}";
const TTY = args.includes("--fd") ? parseInt(args[args.indexOf("--fd") + 1], 10) : 3;
const SYSTEM = new Set(["tmp", "home", "dev", "proc"]);
const SHIM = fs.readFileSync(new URL("./errno_shim.py", import.meta.url), "utf8");

let mp = null;
let muted = false;
let raw = false;
const mirror = new Map(); // path -> last content written to the host

function write(bytes) {
  if (!muted) fs.writeSync(TTY, bytes);
}

function hostToVm(FS) {
  const walk = (hostDir, vmDir) => {
    for (const name of fs.readdirSync(hostDir)) {
      const h = path.join(hostDir, name);
      const v = vmDir === "/" ? "/" + name : vmDir + "/" + name;
      if (fs.statSync(h).isDirectory()) {
        try { FS.mkdir(v); } catch (e) { }
        walk(h, v);
      } else {
        const data = fs.readFileSync(h);
        FS.writeFile(v, data);
        mirror.set(v, Buffer.from(data));
      }
    }
  };
  walk(root, "/");
}

function vmToHost() {
  if (!mp) return;
  const FS = mp.FS;
  const seen = new Set();
  const walk = (vmDir) => {
    for (const name of FS.readdir(vmDir)) {
      if (name === "." || name === "..") continue;
      if (vmDir === "/" && SYSTEM.has(name)) continue;
      const v = vmDir === "/" ? "/" + name : vmDir + "/" + name;
      const h = path.join(root, v);
      if (FS.isDir(FS.stat(v).mode)) {
        fs.mkdirSync(h, { recursive: true });
        seen.add(v);
        walk(v);
      } else {
        const data = Buffer.from(FS.readFile(v));
        seen.add(v);
        const old = mirror.get(v);
        if (!old || !old.equals(data)) {
          // Written aside and renamed over, as the firmware's own store does on flash: a host
          // reader (a test reading state.json after a reset) never sees a half-written file.
          const tmp = h + ".host-tmp";
          fs.writeFileSync(tmp, data);
          fs.renameSync(tmp, h);
          mirror.set(v, data);
        }
      }
    }
  };
  walk("/");
  // Remove what was deleted in the VM (deepest first).
  const hostPaths = [];
  const list = (dir, rel) => {
    for (const name of fs.readdirSync(dir)) {
      const r = rel + "/" + name;
      const h = path.join(dir, name);
      if (fs.statSync(h).isDirectory()) list(h, r);
      hostPaths.push(r);
    }
  };
  list(root, "");
  for (const r of hostPaths.reverse()) {
    if (!seen.has(r)) {
      fs.rmSync(path.join(root, r), { recursive: true, force: true });
      mirror.delete(r);
    }
  }
}

const NGRID_FILES = {
  "/tmp/ngrid/simhal.py": fs.readFileSync(new URL("../simhal.py", import.meta.url), "utf8"),
  "/tmp/ngrid/vhal.py": fs.readFileSync(new URL("../vhal.py", import.meta.url), "utf8"),
  "/tmp/ngrid/sim.json": sim,
};
const BANNER = "MicroPython (neighbourgrid virtual board)\r\nType \"help()\" for more information.\r\n";

// The board's own program (main.py) stepped from the event loop; null when not running.
let task = null;

async function boot({ runMain }) {
  mp = await loadMicroPython({ stdout: (b) => write(b), linebuffer: false });
  mp.registerJsModule("ngbridge", {
    send: (line) => { process.stdout.write(line + "\n"); return 1; },
    poll: () => (bridgeInbox.length ? bridgeInbox.shift() : null),
  });
  hostToVm(mp.FS);
  try { mp.FS.mkdir("/tmp/ngrid"); } catch (e) { }
  for (const [p, text] of Object.entries(NGRID_FILES)) mp.FS.writeFile(p, text);
  mp.runPython(SHIM);
  mp.runPython("import sys\nsys.path.append('/tmp/ngrid')\nimport vhal\nsys.modules['hal'] = vhal");
  mp.runPython("import gc; gc.collect()");
  if (runMain && mainEnabled && exists("/main.py")) startMain();
  if (!task) mp.replInit();
}

function exists(p) {
  try { mp.FS.stat(p); return true; } catch (e) { return false; }
}

function runGuarded(code) {
  // Run code; print a traceback to the serial line as a board would. false if it raised.
  mp.globals.set("_ngrid_code", code);
  mp.runPython(
    "import sys\n" +
    "try:\n" +
    "    exec(_ngrid_code, {'__name__': '__main__'})\n" +
    "    _ngrid_ok = True\n" +
    "except BaseException as _e:\n" +
    "    sys.print_exception(_e)\n" +
    "    _ngrid_ok = False\n");
  return mp.globals.get("_ngrid_ok");
}

function startMain() {
  if (exists("/boot.py")) runGuarded(mp.FS.readFile("/boot.py", { encoding: "utf8" }));
  if (!runGuarded(mp.FS.readFile("/main.py", { encoding: "utf8" }))) return;
  if (mp.pyimport("vhal")._task == null) return; // main.py ran to its end
  task = setTimeout(stepMain, 0);
}

function stepMain() {
  task = null;
  let ms;
  try {
    mp.runPython(
      "import vhal, sys\n" +
      "try:\n" +
      "    _ngrid_ms = vhal.run_once()\n" +
      "except BaseException as _e:\n" +
      "    sys.print_exception(_e)\n" +
      "    vhal._task = None\n" +
      "    _ngrid_ms = None\n");
    ms = mp.globals.get("_ngrid_ms");
  } catch (e) { ms = null; }
  vmToHost();
  if (ms == null) { mp.replInit(); return; }
  task = setTimeout(stepMain, bridgeInbox.length ? 0 : Math.min(ms, 50));
}

function interruptMain() {
  clearTimeout(task);
  task = null;
  mp.runPython("import vhal\nvhal._task = None");
  // The program stopped: its MQTT session goes with it (the broker publishes the will).
  process.stdout.write(JSON.stringify({ op: "close" }) + "\n");
  vmToHost();
  write(Buffer.from("Traceback (most recent call last):\r\n  File \"main.py\"\r\nKeyboardInterrupt: \r\n"));
  write(Buffer.from("\r\n" + BANNER));
  mp.replInit();
}

async function softReset() {
  vmToHost();
  write(Buffer.from("MPY: soft reboot\r\n"));
  if (raw) {
    muted = true;
    await boot({ runMain: false });
    muted = false;
    for (const c of Buffer.from("\x01")) mp.replProcessChar(c);
  } else {
    await boot({ runMain: true });
  }
}

// Raw-paste detection: Ctrl-E 'A' Ctrl-A while in the raw REPL.
let held = [];
const PASTE = [0x05, 0x41, 0x01];

async function feed(c) {
  const r = mp.replProcessChar(c);
  if (c === 0x01) raw = true;
  if (c === 0x02) raw = false;
  if (r !== 0) await softReset();
  else if (raw && c === 0x04) vmToHost();
}

async function onByte(c) {
  if (task) {
    // main.py is running: only Ctrl-C gets through (the rest is lost, as on a busy board).
    if (c === 0x03) interruptMain();
    return;
  }
  if (raw && (held.length > 0 || c === PASTE[0])) {
    held.push(c);
    if (held[held.length - 1] !== PASTE[held.length - 1]) {
      const bytes = held;
      held = [];
      for (const b of bytes) await feed(b);
      return;
    }
    if (held.length === PASTE.length) {
      held = [];
      write(Buffer.from("R\x00"));
    }
    return;
  }
  await feed(c);
}

const bridgeInbox = [];
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => bridgeInbox.push(line));
const finish = () => { try { vmToHost(); } finally { process.exit(0); } };
rl.on("close", finish); // the host closes our stdin to stop us

await boot({ runMain: true });
let chain = Promise.resolve();
// A tty stream polls the descriptor with epoll; a file read stream would block a
// thread-pool thread in read() and keep Node from exiting.
const input = new tty.ReadStream(TTY);
input.on("data", (chunk) => {
  chain = chain.then(async () => { for (const c of chunk) await onByte(c); });
});
input.on("error", finish);
process.on("SIGTERM", finish);
process.on("SIGINT", finish);
process.stdout.write("ready\n");
