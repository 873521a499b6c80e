// Usage: node build.mjs OUT.wasm (from this directory, with componentize-js installed).
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";

const out = process.argv[2];
if (!out) throw new Error("usage: node build.mjs OUT.wasm");
const { component } = await componentize({ sourcePath: "app.js", witPath: "wit", worldName: "js-http" });
await writeFile(out, component);
console.log(`${out}: ${component.length} bytes`);
