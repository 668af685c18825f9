// Builds dist/esm and dist/cjs with tsc (found in this package's or the checkout's node_modules).
// The package is "type": "module", so dist/cjs gets a package.json of its own saying its .js files
// are CommonJS; without it Node would load them as ES modules and `require` would fail.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const candidates = [join(root, "node_modules", ".bin", "tsc"), join(root, "..", "..", "node_modules", ".bin", "tsc")];
const tsc = process.env.TSC ?? candidates.find((path) => existsSync(path));
if (!tsc) throw new Error(`tsc not found in ${candidates.join(" or ")}: run npm install first`);

rmSync(join(root, "dist"), { recursive: true, force: true });
for (const config of ["tsconfig.esm.json", "tsconfig.cjs.json"]) {
  execFileSync(tsc, ["-p", join(root, config)], { stdio: "inherit", cwd: root });
}
mkdirSync(join(root, "dist", "cjs"), { recursive: true });
writeFileSync(join(root, "dist", "cjs", "package.json"), '{\n  "type": "commonjs"\n}\n');
