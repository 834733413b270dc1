// A scan as the workspace shows it: the 3D mesh, every measurement side by side (the automatic
// one and each clinician outline, with their ±), why there is no automatic one when there is
// not, and the outline tool: the clinician draws on the suggested keyframe (the mesh seen from
// that frame's camera, or the frame's own depth picture), sees the re-measured values with
// their ± before anything is stored, and confirms. Used by the scan page (#/scan/<id>) and
// inside the consult, once the scan asked for there is measured.

import { api, el, isStaff, pm } from './core.js';
import { showMesh } from './viewer.js';

const ROWS = [
  ['outline_area_mm2', 'Area', 'mm²'], ['bed_area_mm2', 'Bed area', 'mm²'], ['length_mm', 'Length', 'mm'],
  ['width_mm', 'Width', 'mm'], ['perimeter_mm', 'Perimeter', 'mm'], ['max_depth_mm', 'Max depth', 'mm', 2],
  ['mean_depth_mm', 'Mean depth', 'mm', 2], ['volume_mm3', 'Volume', 'mm³'],
];

const REASONS = {
  no_depression: 'No depression deeper than the threshold was found near the centre of the scan.',
  wound_exceeds_scan_region: 'The depression reaches the edge of the region the scan measures.',
  rim_not_seen: 'The rim of the wound was not seen all round.',
  not_enough_surface: 'Too little of the surface around the wound was reconstructed.',
  measurement_failed: 'The automatic measurement failed.',
};

const TISSUE = [['granulation', 'Granulation'], ['slough', 'Slough'], ['eschar', 'Eschar'],
  ['epithelial', 'Epithelial'], ['other', 'Other']];

const TISSUE_REASONS = {
  no_colour_frames: 'the scan has no colour frames',
  no_usable_colour_frames: 'none of its colour frames could be used',
  no_colour: 'no colour frame saw the wound',
  too_little_colour: 'too little of the wound was seen in colour',
  no_periwound: 'the skin around the wound was not seen in colour',
  periwound_too_dark: 'the skin around the wound was too dark to calibrate the colours',
  no_wound_surface: 'no wound surface was found inside the outline',
  not_analysed: 'it was measured before tissue was analysed',
};

/// The wound bed's tissue shares of each measurement (same columns as the measurements), or
/// why there are none.
function tissueTable(columns) {
  if (!columns.some(([, x]) => x.tissue)) {
    const why = columns.map(([, x]) => x.tissue_unavailable).find(Boolean);
    return why ? el('p', { class: 'muted', 'data-testid': 'tissue-unavailable', 'data-code': why, text: `No tissue composition: ${TISSUE_REASONS[why] || why}.` }) : null;
  }
  const thead = el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: '' }),
    ...columns.map(([label]) => el('th', { scope: 'col', text: label }))));
  const share = (x, cls) => x.tissue && x.tissue.shares.find((s) => s.class === cls);
  const tbody = el('tbody', {}, ...TISSUE.map(([cls, label]) => el('tr', { 'data-testid': `t-${cls}` },
    el('th', { scope: 'row', text: label }),
    ...columns.map(([, x]) => {
      const s = share(x, cls);
      return el('td', { text: s ? `${s.percent.toFixed(0)} ± ${s.percent_pm.toFixed(0)} %` : '–' });
    }))));
  return el('table', { class: 'm', 'data-testid': 'tissue' }, el('caption', { text: 'Wound bed tissue (share of the bed)' }), thead, tbody);
}

/// The measurements as a table, one column each (`[label, measurement]` pairs).
function measurementTable(columns) {
  const thead = el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: '' }),
    ...columns.map(([label, , testid]) => el('th', { scope: 'col', 'data-testid': testid, text: label }))));
  const tbody = el('tbody');
  for (const [k, label, unit, d] of ROWS) {
    if (!columns.some(([, x]) => x[k])) continue;
    tbody.append(el('tr', { 'data-testid': `m-${k}` }, el('th', { scope: 'row', text: label }),
      ...columns.map(([, x]) => el('td', { text: pm(x[k], unit, d || 1) }))));
  }
  return el('table', { class: 'm' }, thead, tbody);
}

/// The outline tool over the viewer: the mesh drawn from the keyframe's camera, clicks add the
/// outline's corners (in keyframe pixels). Measure asks the server for the values the outline
/// gives (`…/measurements/preview`, nothing stored) and shows them beside the automatic ones;
/// Confirm stores that outline (`POST …/measurements`), Keep drawing goes back to the points.
/// With `correcting` (a measurement with a tissue composition) the same drawing marks a region
/// of the wound bed instead: the clinician names its tissue and Correct stores the correction
/// (`POST …/tissue-corrections`), after which the measurement's shares are computed again.
/// Resolves with the stored measurement or correction, or null when the tool is closed.
function outlineTool(id, viewer, canvas, kf, panel, auto, correcting = null) {
  viewer.keyframeView(kf);
  const wrap = canvas.parentElement;
  wrap.style.position = 'relative';
  const svgNs = 'http://www.w3.org/2000/svg';
  const overlay = document.createElementNS(svgNs, 'svg');
  overlay.setAttribute('viewBox', `0 0 ${kf.width} ${kf.height}`);
  overlay.setAttribute('preserveAspectRatio', 'none');
  overlay.setAttribute('data-testid', 'outline-overlay');
  overlay.setAttribute('aria-hidden', 'true');
  // The frame's own depth picture (GET /v1/scans/{id}/keyframes/{seq}), under the outline
  // on request: the same pixels as the canvas, so the outline drawn on either is the same.
  const picture = el('img', { alt: `Frame ${kf.seq} as the depth camera saw it`, 'data-testid': 'keyframe-image', hidden: '' });
  const place = () => {
    const box = `position:absolute;left:${canvas.offsetLeft}px;top:${canvas.offsetTop}px;width:${canvas.clientWidth}px;height:${canvas.clientHeight}px;pointer-events:none`;
    overlay.style.cssText = box;
    picture.style.cssText = box;
  };
  const line = document.createElementNS(svgNs, 'polygon');
  line.setAttribute('fill', 'rgba(255,210,0,0.15)');
  line.setAttribute('stroke', '#ffd200');
  line.setAttribute('stroke-width', String(Math.max(kf.width, kf.height) / 300));
  overlay.append(line);
  wrap.append(picture, overlay);
  place();
  const points = [];
  // While a preview is shown the outline is frozen: Keep drawing unfreezes it.
  let frozen = false;
  const count = el('span', { class: 'muted', 'data-testid': 'outline-count', text: '0 points' });
  const measure = correcting
    ? el('button', { type: 'button', 'data-testid': 'correct-submit', text: 'Correct', disabled: '' })
    : el('button', { type: 'button', 'data-testid': 'outline-measure', text: 'Measure', disabled: '' });
  const classLabel = el('label', { for: 'correct-class', text: 'This region is ' });
  const classSelect = el('select', { id: 'correct-class', 'data-testid': 'correct-class' },
    ...TISSUE.map(([cls, label]) => el('option', { value: cls, text: label.toLowerCase() })));
  const redraw = () => {
    line.setAttribute('points', points.map(([u, v]) => `${u + 0.5},${v + 0.5}`).join(' '));
    count.textContent = `${points.length} point${points.length === 1 ? '' : 's'}`;
    measure.disabled = frozen || points.length < 3;
  };
  const onClick = (e) => {
    if (frozen) return;
    const r = canvas.getBoundingClientRect();
    const u = ((e.clientX - r.left) / r.width) * kf.width - 0.5;
    const v = ((e.clientY - r.top) / r.height) * kf.height - 0.5;
    if (u < 0 || v < 0 || u > kf.width - 1 || v > kf.height - 1) return;
    points.push([Math.round(u * 100) / 100, Math.round(v * 100) / 100]);
    redraw();
  };
  canvas.addEventListener('click', onClick);
  window.addEventListener('resize', place);
  const err = el('p', { class: 'error', role: 'alert' });
  const undo = el('button', { type: 'button', text: 'Undo point', onclick: () => { if (!frozen) { points.pop(); redraw(); } } });
  const cancel = el('button', { type: 'button', text: 'Cancel' });
  const toggle = el('button', { type: 'button', 'data-testid': 'keyframe-toggle', text: 'Show the depth image' });
  toggle.addEventListener('click', async () => {
    try {
      if (!picture.src) {
        const res = await api(`/v1/scans/${id}/keyframes/${kf.seq}`, { raw: true });
        picture.src = URL.createObjectURL(await res.blob());
      }
      picture.hidden = !picture.hidden;
      toggle.textContent = picture.hidden ? 'Show the depth image' : 'Show the 3D surface';
    } catch (e) { err.textContent = `Could not load the frame: ${e.message}`; }
  });
  const preview = el('div', { 'data-testid': 'outline-preview', hidden: '' });
  const instructions = el('p', { text: correcting
    ? `Click around a region of the wound bed on frame ${kf.seq}, say what tissue it is, then Correct.`
    : `Click around the wound's edge on frame ${kf.seq}, then Measure.` });
  const drawing = el('p', {}, measure, ' ', undo, ' ', cancel);
  panel.replaceChildren(...[instructions, el('p', {}, count), correcting ? el('p', {}, classLabel, classSelect) : null,
    drawing, el('p', {}, toggle), preview, err].filter(Boolean));
  return new Promise((resolve) => {
    const close = (result) => {
      canvas.removeEventListener('click', onClick);
      window.removeEventListener('resize', place);
      overlay.remove();
      if (picture.src) URL.revokeObjectURL(picture.src);
      picture.remove();
      viewer.orbitView();
      resolve(result);
    };
    const body = () => ({ keyframe_seq: kf.seq, polygon: points });
    cancel.addEventListener('click', () => close(null));
    if (correcting) {
      // A correction is stored at once: the server recomputes the shares with it (seconds).
      measure.addEventListener('click', async () => {
        frozen = true; redraw();
        err.textContent = '';
        instructions.textContent = 'Computing the tissue shares again with your correction…';
        try {
          close(await api(`/v1/scans/${id}/measurements/${correcting.id}/tissue-corrections`,
            { json: { ...body(), class: classSelect.value } }));
        } catch (e) {
          err.textContent = `Could not store the correction: ${e.message}`;
          instructions.textContent = `Click around a region of the wound bed on frame ${kf.seq}, say what tissue it is, then Correct.`;
          frozen = false; redraw();
        }
      });
      return;
    }
    measure.addEventListener('click', async () => {
      frozen = true; redraw();
      err.textContent = '';
      try {
        const m = await api(`/v1/scans/${id}/measurements/preview`, { json: body() });
        const confirm = el('button', { type: 'button', 'data-testid': 'outline-confirm', text: 'Confirm this outline' });
        const again = el('button', { type: 'button', 'data-testid': 'outline-again', text: 'Keep drawing' });
        const columns = [...(auto ? [['Automatic', auto, 'preview-auto']] : []), ['This outline', m, 'preview-outline']];
        preview.replaceChildren(el('h4', { text: 'Your outline measures' }), measurementTable(columns),
          el('p', { class: 'muted', text: 'Nothing is stored until you confirm. Both measurements stay on the scan.' }),
          el('p', {}, confirm, ' ', again));
        preview.hidden = false;
        drawing.hidden = true;
        instructions.textContent = 'Check the values, then confirm the outline or keep drawing.';
        confirm.focus();
        again.addEventListener('click', () => {
          frozen = false; preview.hidden = true; drawing.hidden = false; redraw();
          instructions.textContent = `Click around the wound's edge on frame ${kf.seq}, then Measure.`;
        });
        confirm.addEventListener('click', async () => {
          confirm.disabled = true; again.disabled = true;
          try { close(await api(`/v1/scans/${id}/measurements`, { json: body() })); } catch (e) {
            err.textContent = `Could not store the outline: ${e.message}`;
            confirm.disabled = false; again.disabled = false;
          }
        });
      } catch (e) {
        err.textContent = `Could not measure the outline: ${e.message}`;
        frozen = false; redraw();
      }
    });
  });
}

/// Draws scan `id` into `root`: a heading, the mesh, and the measurements with the outline
/// tool for those who may measure. `opts.heading` false leaves the heading out (the consult
/// has its own). Resolves once the scan (and its mesh, if any) is shown.
export async function scanView(root, id, opts = {}) {
  const canvas = el('canvas', { id: 'viewer', 'data-testid': 'viewer', tabindex: '0', 'aria-label': '3D wound surface: arrow keys rotate, + and - zoom' });
  const status = el('p', { class: 'muted', id: 'viewer-status', role: 'status' });
  const side = el('div', { class: 'card', 'data-testid': 'measurements' }, el('p', { text: 'Loading…' }));
  const head = opts.heading === false ? null : el('h2', { text: 'Scan' });
  root.replaceChildren(...[head, el('div', { class: 'scan-layout' }, el('section', { class: 'card' }, canvas, status), side)].filter(Boolean));
  try {
    const scan = await api(`/v1/scans/${id}`);
    if (head) head.textContent = `Scan · ${scan.body_site} · ${new Date(scan.created_at).toLocaleString()}`;
    const ms = await api(`/v1/scans/${id}/measurements`);
    const outcome = ms.outcome || { state: ms.status === 'complete' ? 'measured' : 'pending', mesh: ms.status === 'complete' };
    const auto = ms.measurements.find((x) => x.method === 'auto');
    // Every measurement side by side: the automatic one, then the clinician's outlines (newest
    // last), so an adjusted outline never hides what the scan measured by itself.
    const outlines = ms.measurements.filter((x) => x.method !== 'auto');
    const columns = [...(auto ? [['Automatic', auto, 'm-col-auto']] : []),
      ...outlines.map((x, i) => [`Outline${outlines.length > 1 ? ` ${i + 1}` : ''}`, x, `m-col-${x.method}`])];
    const needsOutline = outcome.state === 'needs_outline';
    const reason = needsOutline && outcome.reason
      ? el('div', { 'data-testid': 'outcome-reason', 'data-code': outcome.reason.code },
        el('p', { text: `No automatic measurement: ${REASONS[outcome.reason.code] || outcome.reason.message}` }),
        el('p', { class: 'muted', text: columns.length ? 'A clinician drew the outline.' : 'A clinician can draw the outline on the scan.' }))
      : null;
    const tool = el('div', { 'data-testid': 'outline-tool' });
    // Drawing needs `scans:measure` (clinicians and admins); patients see the reason only.
    const mayMeasure = isStaff();
    const draw = outcome.mesh && outcome.suggested_keyframe && mayMeasure
      ? el('button', { type: 'button', 'data-testid': 'draw-outline', text: needsOutline ? 'Draw the outline' : 'Adjust the outline' })
      : null;
    // The tissue of the newest measurement that has a composition (a clinician's outline
    // before the automatic one) can be corrected region by region.
    const corrected = [...columns].reverse().find(([, x]) => x.tissue);
    const correct = draw && corrected
      ? el('button', { type: 'button', 'data-testid': 'correct-tissue', text: `Correct the tissue (${corrected[0].toLowerCase()})` })
      : null;
    // (replaceChildren would write a null as the text "null": the absent parts are left out.)
    side.replaceChildren(...[
      el('h3', { text: 'Measurements' }),
      el('p', {}, el('span', { class: `badge ${ms.status}`, text: needsOutline ? 'needs outline' : ms.status }),
        opts.heading === false || !mayMeasure ? null : ' ',
        opts.heading === false || !mayMeasure ? null : el('a', { href: `#/patient/${scan.patient_id}`, text: 'History' })),
      reason,
      columns.length ? measurementTable(columns) : el('p', { class: 'empty', text: 'No measurement yet.' }),
      columns.length ? el('p', { class: 'muted', text: '± is the half-width of the interval the true value lies in.' }) : null,
      columns.length ? tissueTable(columns) : null,
      draw, correct ? ' ' : null, correct, tool].filter(Boolean));
    if (outcome.mesh) {
      const res = await api(`/v1/scans/${id}/mesh?format=glb`, { raw: true });
      const viewer = await showMesh(canvas, await res.arrayBuffer());
      const said = () => {
        status.textContent = canvas.dataset.paint === 'colour'
          ? `${viewer.triangles} triangles in the scan's own colours.`
          : `${viewer.triangles} triangles; the wound region is highlighted.`;
      };
      said();
      if (viewer.hasColour) {
        // One toggle between the scan's colours (pressed, the default) and the height-coded view.
        const toggle = el('button', { type: 'button', class: 'paint-toggle', 'data-testid': 'paint-toggle', 'aria-pressed': 'true', 'aria-controls': 'viewer', text: 'Scan colours' });
        toggle.addEventListener('click', () => {
          const colour = toggle.getAttribute('aria-pressed') !== 'true';
          viewer.paint(colour ? 'colour' : 'height');
          toggle.setAttribute('aria-pressed', String(colour));
          said();
        });
        status.before(toggle);
      }
      canvas.dataset.ready = 'true';
      const open = async (correcting) => {
        draw.hidden = true;
        if (correct) correct.hidden = true;
        status.textContent = `The scan as frame ${outcome.suggested_keyframe.seq} saw it.`;
        const made = await outlineTool(id, viewer, canvas, outcome.suggested_keyframe, tool, auto, correcting);
        if (made) scanView(root, id, opts); else {
          draw.hidden = false;
          if (correct) correct.hidden = false;
          tool.replaceChildren();
        }
      };
      if (draw) draw.addEventListener('click', () => open(null));
      if (correct) correct.addEventListener('click', () => open(corrected[1]));
    } else {
      status.textContent = outcome.state === 'pending' ? 'The mesh appears when the scan is complete.' : 'This scan has no mesh.';
    }
  } catch (e) {
    if (e.code === 'signed_out') return;
    side.replaceChildren(el('p', { class: 'error', role: 'alert', text: `Could not load the scan: ${e.message}` }));
  }
}
