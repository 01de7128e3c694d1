// Run a Python script in the MicroPython VM (WebAssembly port) and report what happened.
//
// stdin: JSON {"files": {"/abs/path": "text", ...}, "script": "python source",
//              "repeat": {"script": str, "count": int} (optional), "finish": str (optional),
//              "heapsize": bytes, "collect": "/dir/to/return"}
// stdout: one JSON line {"ok": bool, "error": str|null, "stdout": str, "result": any,
//                        "files": {"/abs/path": "text"}}
// The script sets its result by writing JSON to /result.json. "files" returns every file under
// "collect" after the run (the board's flash, to carry into the next "boot").
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const require = createRequire(import.meta.url);
const modulePath = process.env.NGRID_MICROPYTHON_MJS ||
  require.resolve("@micropython/micropython-webassembly-pyscript/micropython.mjs",
                  { paths: [process.cwd()] });
const { loadMicroPython } = await import(pathToFileURL(modulePath).href);

const request = JSON.parse(readFileSync(0, "utf8"));
const out = [];
const mp = await loadMicroPython({
  heapsize: request.heapsize || 256 * 1024,
  stdout: (s) => out.push(s),
  stderr: (s) => out.push(s),
});

function mkdirs(FS, path) {
  const parts = path.split("/").filter(Boolean);
  let cur = "";
  for (const part of parts) {
    cur += "/" + part;
    try { FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

for (const [path, text] of Object.entries(request.files || {})) {
  mkdirs(mp.FS, path.slice(0, path.lastIndexOf("/")));
  mp.FS.writeFile(path, text);
}

let ok = true;
let error = null;
try {
  mp.runPython(request.script);
  // The WebAssembly port reclaims memory only between executions (gc.collect() inside one
  // run frees nothing), so long-running work is driven as repeated short runs, as on a board
  // whose main loop collects between steps.
  if (request.repeat) {
    for (let i = 0; i < request.repeat.count; i++) mp.runPython(request.repeat.script);
  }
  if (request.finish) mp.runPython(request.finish);
} catch (e) {
  ok = false;
  error = String(e && e.message ? e.message : e);
}

let result = null;
try { result = JSON.parse(mp.FS.readFile("/result.json", { encoding: "utf8" })); } catch (e) { }

const files = {};
function walk(FS, dir) {
  for (const name of FS.readdir(dir)) {
    if (name === "." || name === "..") continue;
    const path = dir === "/" ? "/" + name : dir + "/" + name;
    const st = FS.stat(path);
    if (FS.isDir(st.mode)) walk(FS, path);
    else files[path] = FS.readFile(path, { encoding: "utf8" });
  }
}
if (request.collect) {
  try { walk(mp.FS, request.collect); } catch (e) { }
}
process.stdout.write(JSON.stringify({ ok, error, stdout: out.join("\n"), result, files }) + "\n");
