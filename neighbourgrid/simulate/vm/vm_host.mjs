// A long-lived host for meters whose firmware runs in the MicroPython VM (WebAssembly port).
//
// One VM per meter (its own heap and filesystem). Requests are JSON lines on stdin, answers
// JSON lines on stdout, in order:
//   {"op": "boot", "meter": id, "files": {"/abs/path": "text"}, "code": str, "heapsize": n}
//   {"op": "run", "meter": id, "code": str}      -> {"ok": bool, "error": str|null, "out": str}
//   {"op": "files", "meter": id, "dir": "/m"}    -> {"ok": true, "files": {"/abs/path": "text"}}
// Each "run" is one execution (the port reclaims memory only between executions).
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const require = createRequire(import.meta.url);
const modulePath = require.resolve(
  "@micropython/micropython-webassembly-pyscript/micropython.mjs",
  { paths: [process.cwd()] });
const { loadMicroPython } = await import(pathToFileURL(modulePath).href);

const vms = new Map();

function mkdirs(FS, path) {
  let cur = "";
  for (const part of path.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

function walk(FS, dir, files) {
  for (const name of FS.readdir(dir)) {
    if (name === "." || name === "..") continue;
    const path = dir === "/" ? "/" + name : dir + "/" + name;
    const st = FS.stat(path);
    if (FS.isDir(st.mode)) walk(FS, path, files);
    else files[path] = FS.readFile(path, { encoding: "utf8" });
  }
}

function run(vm, code) {
  vm.out.length = 0;
  try {
    vm.mp.runPython(code);
    return { ok: true, error: null, out: vm.out.join("") };
  } catch (e) {
    return { ok: false, error: String(e && e.message ? e.message : e), out: vm.out.join("") };
  }
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  let answer;
  try {
    if (req.op === "boot") {
      const out = [];
      const mp = await loadMicroPython({
        heapsize: req.heapsize || 512 * 1024,
        stdout: (s) => out.push(s + "\n"),
        stderr: (s) => out.push(s + "\n"),
      });
      for (const [path, text] of Object.entries(req.files || {})) {
        mkdirs(mp.FS, path.slice(0, path.lastIndexOf("/")));
        mp.FS.writeFile(path, text);
      }
      const vm = { mp, out };
      vms.set(req.meter, vm);
      answer = run(vm, req.code || "");
    } else if (req.op === "run") {
      answer = run(vms.get(req.meter), req.code);
    } else if (req.op === "files") {
      const files = {};
      try { walk(vms.get(req.meter).mp.FS, req.dir, files); } catch (e) { }
      answer = { ok: true, error: null, files };
    } else {
      answer = { ok: false, error: "unknown op " + req.op };
    }
  } catch (e) {
    answer = { ok: false, error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
