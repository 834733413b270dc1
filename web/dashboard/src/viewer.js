// The 3D wound viewer: the scan's GLB mesh (GET /v1/scans/{id}/mesh) in three.js, bundled
// at build time (no CDN). Two ways to paint it: the scan's own colours (the GLB's COLOR_0,
// blended from the phone's colour frames and calibrated, docs/measurement.md), the default
// when the mesh has them; and the height-coded view, where the wound is highlighted: the
// skin is the plane of least variance through the mesh, and vertices more than 0.8 mm into
// the depression (the same contour level the measurement uses) are coloured.
// Keyboard: arrows rotate, + / - zoom; the mouse orbits.
//
// Outline view (a scan whose automatic measurement failed, `needs_outline`): the mesh is
// drawn from the suggested keyframe's camera, the phone's own intrinsics and pose, so the
// canvas shows what that frame saw and a canvas pixel maps linearly to a keyframe pixel:
// u = x / canvasWidth · width − 0.5 (pixel centres at integer coordinates, as the API's
// polygon wants them). OpenCV camera axes (x right, y down, z forward) become three.js's
// (x right, y up, z backward) by flipping y and z.

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
  return { normal: nrm.multiplyScalar(-sign), centre: c, inWound, colours: new THREE.BufferAttribute(colors, 3) };
}

/// The three.js projection of a pinhole camera `k` (row-major 3×3, pixels) over a
/// `width × height` image, near/far planes `n`/`f`: NDC ±1 at the image's outer pixel edges.
export function keyframeProjection(k, width, height, n, f) {
  const [fx, , cx, , fy, cy] = k;
  return new THREE.Matrix4().set(
    (2 * fx) / width, 0, 1 - (2 * (cx + 0.5)) / width, 0,
    0, (2 * fy) / height, (2 * (cy + 0.5)) / height - 1, 0,
    0, 0, -(f + n) / (f - n), (-2 * f * n) / (f - n),
    0, 0, -1, 0,
  );
}

/// The three.js camera matrix (world from GL camera) of a row-major world-from-camera pose in
/// OpenCV axes.
export function keyframeCameraMatrix(pose) {
  const m = new THREE.Matrix4().set(...pose);
  return m.multiply(new THREE.Matrix4().makeScale(1, -1, -1));
}

/// Draws the GLB in `canvas`; resolves once the first frame is drawn with facts about the
/// mesh, `keyframeView(kf)` / `orbitView()` to switch between the suggested keyframe's
/// camera (the outline view) and the orbit view, and `paint('colour' | 'height')` to switch
/// between the scan's colours (`hasColour`: the mesh has them; the first view then) and the
/// height-coded view. `canvas.dataset.paint` says which is shown.
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
    // GLTFLoader names COLOR_0 `color`: the scan's colours, linear, as glTF defines them.
    const scanned = g.getAttribute('color') || null;
    facts = highlight(g);
    if (!g.getAttribute('normal')) g.computeVertexNormals();
    o.material = new THREE.MeshStandardMaterial({ vertexColors: true, roughness: 0.8, side: THREE.DoubleSide });
    meshes.push({ mesh: o, scanned, height: facts.colours });
  });
  const hasColour = meshes.length > 0 && meshes.every((m) => m.scanned);
  const setPaint = (how) => {
    const colour = how === 'colour' && hasColour;
    for (const m of meshes) {
      m.mesh.geometry.setAttribute('color', colour ? m.scanned : m.height);
      m.mesh.material.needsUpdate = true;
    }
    canvas.dataset.paint = colour ? 'colour' : 'height';
  };
  setPaint('colour');
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
  // The outline view's camera (null: the orbit view).
  let keyCamera = null;
  const resize = () => {
    const w = canvas.clientWidth || 640, h = canvas.clientHeight || 480;
    renderer.setSize(w, h, false);
    camera.aspect = w / h;
    camera.updateProjectionMatrix();
  };
  const draw = () => { resize(); renderer.render(scene, keyCamera || camera); };
  controls.addEventListener('change', draw);
  canvas.addEventListener('keydown', (e) => {
    if (keyCamera) return;
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
  const keyframeView = (kf) => {
    // The canvas takes the keyframe's aspect so its pixels scale the keyframe's evenly.
    canvas.style.height = 'auto';
    canvas.style.aspectRatio = `${kf.width} / ${kf.height}`;
    const near = 0.01, far = 5;
    keyCamera = new THREE.PerspectiveCamera();
    keyCamera.matrixAutoUpdate = false;
    keyCamera.matrix.copy(keyframeCameraMatrix(kf.pose));
    keyCamera.matrixWorld.copy(keyCamera.matrix);
    keyCamera.matrixWorldInverse.copy(keyCamera.matrix).invert();
    keyCamera.projectionMatrix.copy(keyframeProjection(kf.k, kf.width, kf.height, near, far));
    keyCamera.projectionMatrixInverse.copy(keyCamera.projectionMatrix).invert();
    sun.position.setFromMatrixPosition(keyCamera.matrix);
    controls.enabled = false;
    canvas.dataset.view = 'keyframe';
    draw();
  };
  const orbitView = () => {
    keyCamera = null;
    canvas.style.height = '';
    canvas.style.aspectRatio = '';
    sun.position.copy(camera.position);
    controls.enabled = true;
    canvas.dataset.view = 'orbit';
    draw();
  };
  const paint = (how) => { setPaint(how); draw(); };
  canvas.dataset.view = 'orbit';
  return { triangles, woundVertices: facts ? facts.inWound : 0, meshes: meshes.length, hasColour, paint, keyframeView, orbitView };
}
