// Validates a GLB with the Khronos glTF validator (npm `gltf-validator`, pinned in
// web/package.json): `node tests/gltf_validate.mjs mesh.glb`. Prints the report's issues as
// one JSON line ({numErrors, numWarnings, numInfos, numHints, messages, info}) and exits 1
// when the asset has an error. Used by tests/api/colour.rs on the server's coloured GLB.
import { readFileSync } from 'node:fs';
import validator from 'gltf-validator';

const path = process.argv[2];
const bytes = new Uint8Array(readFileSync(path));
const report = await validator.validateBytes(bytes, { maxIssues: 100 });
const { numErrors, numWarnings, numInfos, numHints, messages } = report.issues;
const info = report.info ? { version: report.info.version, totalVertexCount: report.info.totalVertexCount, totalTriangleCount: report.info.totalTriangleCount } : null;
console.log(JSON.stringify({ numErrors, numWarnings, numInfos, numHints, messages, info }));
process.exit(numErrors === 0 ? 0 : 1);
