// The 3D wound viewer: the scan's GLB mesh (GET /v1/scans/{id}/mesh) in three.js, bundled
// at build time (no CDN). The wound is highlighted: the skin is the plane of least
// variance through the mesh, and vertices more than 0.8 mm into the depression (the same
// contour level the measurement uses, docs/measurement.md) are coloured.
// Keyboard: arrows rotate, + / - zoom; the mouse orbits.

import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const WOUND_LEVEL_M = 0.0008;

/// Unit normal of the least-variance plane through `pos` (power iteration on tr(C)·I − C).
function skinNormal(pos, c) {
  const C = [0, 0, 0, 0, 0, 0, 0, 0, 0];
  const n = pos.count;
  for (let i = 0; i < n; i++) {
    const d = [pos.getX(i) - c.x, pos.getY(i) - c.y, pos.getZ(i) - c.z];
    for (let a = 0; a < 3; a++) for (let b = 0; b < 3; b++) C[a * 3 + b] += d[a] * d[b];
  }
  const tr = C[0] + C[4] + C[8];
  const M = C.map((v, k) => (k % 4 === 0 ? tr - v : -v));
  let v = new THREE.Vector3(0.3, 0.2, 1).normalize();
  for (let it = 0; it < 64; it++) {
    v = new THREE.Vector3(
      M[0] * v.x + M[1] * v.y + M[2] * v.z,
      M[3] * v.x + M[4] * v.y + M[5] * v.z,
      M[6] * v.x + M[7] * v.y + M[8] * v.z,
    ).normalize();
  }
  return v;
}

function highlight(geom) {
  const pos = geom.getAttribute('position');
  geom.computeBoundingBox();
  const c = new THREE.Vector3();
  for (let i = 0; i < pos.count; i++) c.add(new THREE.Vector3(pos.getX(i), pos.getY(i), pos.getZ(i)));
  c.divideScalar(Math.max(1, pos.count));
  const nrm = skinNormal(pos, c);
  const h = new Float32Array(pos.count);
  for (let i = 0; i < pos.count; i++) h[i] = (pos.getX(i) - c.x) * nrm.x + (pos.getY(i) - c.y) * nrm.y + (pos.getZ(i) - c.z) * nrm.z;
  const sorted = Float32Array.from(h).sort();
  const med = sorted[Math.floor(sorted.length / 2)] || 0;
  const lo = sorted[0] - med, hi = sorted[sorted.length - 1] - med;
  const sign = Math.abs(lo) > Math.abs(hi) ? -1 : 1;
  const colors = new Float32Array(pos.count * 3);
  const skin = new THREE.Color('#d9b39a'), wound = new THREE.Color('#c0392b');
  let inWound = 0;
  for (let i = 0; i < pos.count; i++) {
    const depth = sign * (h[i] - med);
    const col = depth > WOUND_LEVEL_M ? wound : skin;
    if (depth > WOUND_LEVEL_M) inWound++;
    colors.set([col.r, col.g, col.b], i * 3);
  }
  geom.setAttribute('color', new THREE.BufferAttribute(colors, 3));
  return { normal: nrm.multiplyScalar(-sign), centre: c, inWound };
}

/// Draws the GLB in `canvas`; resolves with facts about the mesh once the first frame is drawn.
export async function showMesh(canvas, glb) {
  const gltf = await new GLTFLoader().parseAsync(glb, '');
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(Math.min(2, window.devicePixelRatio || 1));
  const scene = new THREE.Scene();
  scene.background = new THREE.Color('#20242b');
  scene.add(new THREE.HemisphereLight(0xffffff, 0x444444, 1.6));
  const sun = new THREE.DirectionalLight(0xffffff, 1.4);
  scene.add(sun);
  let triangles = 0;
  let facts = null;
  const meshes = [];
  gltf.scene.traverse((o) => {
    if (!o.isMesh) return;
    const g = o.geometry;
    triangles += (g.index ? g.index.count : g.getAttribute('position').count) / 3;
    facts = highlight(g);
    if (!g.getAttribute('normal')) g.computeVertexNormals();
    o.material = new THREE.MeshStandardMaterial({ vertexColors: true, roughness: 0.8, side: THREE.DoubleSide });
    meshes.push(o);
  });
  scene.add(gltf.scene);
  const box = new THREE.Box3().setFromObject(gltf.scene);
  const size = box.getSize(new THREE.Vector3()).length() || 0.1;
  const centre = box.getCenter(new THREE.Vector3());
  const camera = new THREE.PerspectiveCamera(40, 1, size / 100, size * 20);
  const towards = facts ? facts.normal.clone() : new THREE.Vector3(0, 0, -1);
  camera.position.copy(centre).addScaledVector(towards, size * 1.2);
  camera.up.set(0, -1, 0);
  camera.lookAt(centre);
  sun.position.copy(camera.position);
  const controls = new OrbitControls(camera, canvas);
  controls.target.copy(centre);
  controls.update();
  const resize = () => {
    const w = canvas.clientWidth || 640, h = canvas.clientHeight || 480;
    renderer.setSize(w, h, false);
    camera.aspect = w / h;
    camera.updateProjectionMatrix();
  };
  const draw = () => { resize(); renderer.render(scene, camera); };
  controls.addEventListener('change', draw);
  canvas.addEventListener('keydown', (e) => {
    const step = 0.15;
    const off = camera.position.clone().sub(controls.target);
    const sph = new THREE.Spherical().setFromVector3(off);
    if (e.key === 'ArrowLeft') sph.theta -= step;
    else if (e.key === 'ArrowRight') sph.theta += step;
    else if (e.key === 'ArrowUp') sph.phi = Math.max(0.05, sph.phi - step);
    else if (e.key === 'ArrowDown') sph.phi = Math.min(Math.PI - 0.05, sph.phi + step);
    else if (e.key === '+' || e.key === '=') sph.radius *= 0.85;
    else if (e.key === '-') sph.radius /= 0.85;
    else return;
    e.preventDefault();
    camera.position.copy(controls.target).add(new THREE.Vector3().setFromSpherical(sph));
    camera.lookAt(controls.target);
    draw();
  });
  window.addEventListener('resize', draw);
  draw();
  return { triangles, woundVertices: facts ? facts.inWound : 0, meshes: meshes.length };
}
