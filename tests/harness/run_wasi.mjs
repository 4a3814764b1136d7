// Runs a wasm32-wasip1 program under Node's WASI (the same V8 engine Envoy runs the modules in).
// Usage: node --no-warnings tests/harness/run_wasi.mjs program.wasm
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv, exit } from "node:process";

const wasi = new WASI({ version: "preview1", args: [argv[2]], env: {} });
const module = await WebAssembly.compile(await readFile(argv[2]));
// A module built against proxy-wasm also imports its host functions, unused here: stubs.
const env = new Proxy({}, { get: () => () => 0 });
const instance = await WebAssembly.instantiate(module, { ...wasi.getImportObject(), env });
// The proxy-wasm entry point (`_initialize`) is not this program's: start `main` alone.
const { _start, memory } = instance.exports;
exit(wasi.start({ exports: { _start, memory } }));
