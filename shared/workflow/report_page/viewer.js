// report.html's viewers: NiiVue (global `niivue`, report_assets/niivue.js) over the run's own NIfTI files.
// The page's data sits in <script id="viewer-data" type="application/json"> (written by report_html.py):
//   {studies: [{study, title, pairs: [...], holdout: [...], variants: [...], label_lists: {name: {id: label}}}]}
// Each viewer is one canvas: an image with a label map as overlay, slices in three planes, a crosshair readout.
"use strict";

(function () {
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const status = document.getElementById("viewer-status");
  window.reportViewers = [];  // every panel, for tests and the console
  window.reportViewersReady = false;

  if (location.protocol === "file:") {
    status.textContent = "The 3D viewers read the run's NIfTI files, which a browser refuses to a page opened as a " +
      "file. Serve the folder and open it there: python -m http.server --directory <this folder> 8000, then " +
      "http://localhost:8000/report.html. The tables and plots above work either way.";
    window.reportViewersReady = true;
    return;
  }
  if (typeof niivue === "undefined") {
    status.textContent = "NiiVue is missing (report_assets/niivue.js): run scripts/setup_env.sh, then the report " +
      "stage again.";
    window.reportViewersReady = true;
    return;
  }

  // A distinct colour per label id (background transparent), the label list's names for the readout.
  function labelColormap(labels) {
    const ids = Object.keys(labels).map(Number).sort((a, b) => a - b);
    const cm = { R: [], G: [], B: [], A: [], I: [], labels: [] };
    ids.forEach((id, k) => {
      const hue = ((k - 1) * 137.508 + 360) % 360;  // the first label red, then golden-angle steps apart
      const [r, g, b] = hslToRgb(hue / 360, 0.75, 0.55);
      cm.R.push(id === 0 ? 0 : r); cm.G.push(id === 0 ? 0 : g); cm.B.push(id === 0 ? 0 : b);
      cm.A.push(id === 0 ? 0 : 255); cm.I.push(id); cm.labels.push(labels[id]);
    });
    return cm;
  }

  function hslToRgb(h, s, l) {
    const f = (n) => {
      const k = (n + h * 12) % 12;
      const a = s * Math.min(l, 1 - l);
      return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
    };
    return [f(0), f(8), f(4)];
  }

  // The centre of a label map's non-zero voxels, in RAS voxels (null when it has none).
  function labelCentre(volume) {
    const img = volume.img2RAS();
    const [, nx, ny] = volume.dimsRAS;
    let sx = 0, sy = 0, sz = 0, n = 0;
    for (let i = 0; i < img.length; i++) {
      if (img[i] > 0) {
        const x = i % nx, y = Math.floor(i / nx) % ny, z = Math.floor(i / (nx * ny));
        sx += x; sy += y; sz += z; n += 1;
      }
    }
    return n > 0 ? [sx / n, sy / n, sz / n] : null;
  }

  // One panel: canvas, overlay toggle and opacity, readout; load(image, label, labels) swaps its volumes.
  function makePanel(container, caption) {
    const panel = document.createElement("figure");
    panel.className = "viewer-panel";
    const title = document.createElement("figcaption");
    title.textContent = caption;
    const canvasBox = document.createElement("div");
    canvasBox.className = "viewer-canvas";
    const canvas = document.createElement("canvas");
    canvasBox.appendChild(canvas);
    const controls = document.createElement("div");
    controls.className = "viewer-controls";
    const toggle = document.createElement("input");
    toggle.type = "checkbox"; toggle.checked = true; toggle.className = "overlay-toggle";
    const toggleLabel = document.createElement("label");
    toggleLabel.append(toggle, " overlay");
    const opacity = document.createElement("input");
    opacity.type = "range"; opacity.min = "0"; opacity.max = "1"; opacity.step = "0.05"; opacity.value = "0.6";
    opacity.className = "overlay-opacity";
    const opacityLabel = document.createElement("label");
    opacityLabel.append("opacity ", opacity);
    const readout = document.createElement("div");
    readout.className = "viewer-readout";
    readout.textContent = "click a slice: intensity and label under the crosshair";
    controls.append(toggleLabel, opacityLabel);
    panel.append(title, controls, canvasBox, readout);
    container.appendChild(panel);

    const nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1], show3Dcrosshair: true, isColorbar: false, crosshairWidth: 0.5,
      crosshairColor: [1, 0.85, 0.2, 0.7],
    });
    let labels = {};
    const state = { panel, nv, canvas, toggle, opacity, ready: nv.attachToCanvas(canvas) };
    const applyOpacity = () => {
      if (nv.volumes.length > 1) nv.setOpacity(1, toggle.checked ? Number(opacity.value) : 0);
    };
    toggle.addEventListener("change", applyOpacity);
    opacity.addEventListener("input", applyOpacity);
    nv.onLocationChange = (location) => {
      const values = location.values || [];
      const intensity = values.length > 0 ? Number(values[0].value).toFixed(3) : "-";
      const id = values.length > 1 ? Math.round(values[1].value) : null;
      const name = id === null ? "-" : (labels[id] !== undefined ? `${labels[id]} (${id})` : `id ${id}`);
      const vox = (location.vox || []).map((v) => Math.round(v)).join(", ");
      readout.textContent = `voxel ${vox}: intensity ${intensity}, label ${name}`;
    };
    // centre: RAS voxel for the crosshair (default: the label map's centre, where the label is to see)
    state.load = async (image, label, labelList, centre) => {
      await state.ready;
      labels = labelList || {};
      await nv.loadVolumes([
        { url: image, colormap: "gray" },
        { url: label, opacity: toggle.checked ? Number(opacity.value) : 0 },
      ]);
      nv.volumes[1].setColormapLabel(labelColormap(labels));
      nv.setSliceType(nv.sliceTypeMultiplanar);
      const where = centre || labelCentre(nv.volumes[1]);
      if (where) nv.scene.crosshairPos = nv.vox2frac(where);
      applyOpacity();
      nv.updateGLVolume();
      panel.dataset.loaded = image;
      return where;
    };
    window.reportViewers.push(state);
    return state;
  }

  function select(options, onChange) {
    const element = document.createElement("select");
    options.forEach(([value, text]) => {
      const option = document.createElement("option");
      option.value = value; option.textContent = text;
      element.appendChild(option);
    });
    element.addEventListener("change", () => onChange(element.value));
    return element;
  }

  const loads = [];
  for (const study of data.studies) {
    const section = document.getElementById(`viewer-${study.study}`);
    if (!section) continue;
    if (study.pairs.length > 0) {
      const row = document.createElement("div");
      row.className = "viewer-row";
      const panel = makePanel(row, "generated pair: image with its label map");
      const show = (i) => {
        const pair = study.pairs[Number(i)];
        return panel.load(pair.image, pair.label, study.label_lists[pair.labels]);
      };
      const chooser = select(study.pairs.map((p, i) => [i, p.name]), show);
      chooser.className = "pair-select";
      section.append(chooser, row);
      loads.push(show(0));
    }
    if (study.holdout.length > 0) {
      const row = document.createElement("div");
      row.className = "viewer-row";
      const truth = makePanel(row, "hold-out case: truth");
      const predictions = study.variants.slice(0, 3).map((variant, k) => {
        const panel = makePanel(row, "prediction of");
        const chooser = select(study.variants.map((v) => [v, `nnU-Net ${v}`]), () => showCase(caseChooser.value));
        chooser.value = variant;
        panel.panel.querySelector("figcaption").appendChild(chooser);
        return { panel, chooser };
      });
      // every panel of a case at the truth's centre, so that they show the same slices
      const showCase = async (i) => {
        const item = study.holdout[Number(i)];
        const centre = await truth.load(item.image, item.truth, study.label_lists.segmentation);
        const jobs = [];
        for (const { panel, chooser } of predictions) {
          const prediction = item.predictions[chooser.value];
          if (prediction) jobs.push(panel.load(item.image, prediction, study.label_lists.segmentation, centre));
        }
        return Promise.all(jobs);
      };
      const caseChooser = select(study.holdout.map((h, i) => [i, h.case]), showCase);
      caseChooser.className = "case-select";
      section.append(caseChooser, row);
      loads.push(showCase(0));
    }
  }
  Promise.all(loads).then(
    () => { status.textContent = ""; window.reportViewersReady = true; },
    (error) => { status.textContent = `A volume could not be loaded: ${error}`; console.error(error); },
  );
})();

// Tables: a click on a column's header sorts by it (numbers as numbers; again: the other way).
(function () {
  document.querySelectorAll("table").forEach((table) => {
    const head = table.tHead;
    const body = table.tBodies[0];
    if (!head || !body) return;
    Array.from(head.rows[0].cells).forEach((cell, column) => {
      cell.classList.add("sortable");
      cell.title = "sort by this column";
      cell.addEventListener("click", () => {
        const ascending = cell.dataset.order !== "ascending";
        Array.from(head.rows[0].cells).forEach((c) => delete c.dataset.order);
        cell.dataset.order = ascending ? "ascending" : "descending";
        const key = (row) => {
          const text = row.cells[column] ? row.cells[column].textContent.trim() : "";
          const number = parseFloat(text.replace(/[^0-9eE.+-]/g, " ").trim().split(" ")[0]);
          return Number.isNaN(number) ? text : number;
        };
        const rows = Array.from(body.rows);
        rows.sort((a, b) => {
          const x = key(a), y = key(b);
          const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
          return ascending ? order : -order;
        });
        rows.forEach((row) => body.appendChild(row));
      });
    });
  });
})();
