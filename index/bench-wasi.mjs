// Runs a wasm32-wasip1 program under Node's WASI: node bench-wasi.mjs program.wasm [args…]
// The BENCH_* environment variables are passed through, and the working directory is preopened
// (the bench reads index/tests/data/ from it).
import { readFile } from "node:fs/promises";
import { argv, cwd, env as hostEnv } from "node:process";
import { WASI } from "node:wasi";

const [program, ...args] = argv.slice(2);
const env = Object.fromEntries(Object.entries(hostEnv).filter(([k]) => k.startsWith("BENCH_") && k !== "BENCH_EXPORT"));
const wasi = new WASI({ version: "preview1", args: [program, ...args], env, preopens: { ".": cwd() } });
const module = await WebAssembly.compile(await readFile(program));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
wasi.start(instance);
