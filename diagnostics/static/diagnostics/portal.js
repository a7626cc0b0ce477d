/* Small enhancements on top of server-rendered pages; every page works without them.
 * Event delegation on document, so fragments htmx swaps in need no re-initialisation. */
(function () {
  "use strict";

  var SHORTCUTS_KEY = "portal.shortcuts";

  function announce(text) {
    var region = document.getElementById("announcer");
    if (!region) return;
    region.textContent = "";
    // A fresh text node after a tick, so the same message twice is still read out.
    window.setTimeout(function () { region.textContent = text; }, 50);
  }

  function shortcutsEnabled() {
    try { return window.localStorage.getItem(SHORTCUTS_KEY) !== "off"; } catch (e) { return true; }
  }

  /* ---- keyboard shortcuts (WCAG 2.1.4: they can be switched off) ---- */
  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("shortcuts-enabled");
    if (toggle) {
      toggle.checked = shortcutsEnabled();
      toggle.addEventListener("change", function () {
        try { window.localStorage.setItem(SHORTCUTS_KEY, toggle.checked ? "on" : "off"); } catch (e) { /* private mode */ }
        announce(toggle.checked ? "Single-key shortcuts on." : "Single-key shortcuts off.");
      });
    }
  });

  function typingInto(target) {
    if (!target || !target.tagName) return false;
    var tag = target.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select" || target.isContentEditable) return true;
    if (tag !== "input") return false;
    var type = (target.getAttribute("type") || "text").toLowerCase();
    return ["checkbox", "radio", "range", "button", "submit", "reset", "file"].indexOf(type) === -1;
  }

  function moveInWorklist(step) {
    var links = Array.prototype.slice.call(document.querySelectorAll("[data-worklist] [data-row-link]"));
    if (!links.length) return false;
    var index = links.indexOf(document.activeElement);
    var next = index === -1 ? (step > 0 ? 0 : links.length - 1) : Math.min(Math.max(index + step, 0), links.length - 1);
    links[next].focus();
    links[next].scrollIntoView({ block: "nearest" });
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    if (!shortcutsEnabled() || typingInto(event.target)) return;
    var key = event.key.toLowerCase();
    if ((key === "j" || key === "k") && moveInWorklist(key === "j" ? 1 : -1)) {
      event.preventDefault();
      return;
    }
    if (key === "h") {
      var toggles = document.querySelectorAll("[data-heatmap-toggle]");
      if (!toggles.length) return;
      var show = !toggles[0].checked;
      toggles.forEach(function (box) { box.checked = show; setHeatmapVisible(box, show); });
      announce(show ? "Heatmap shown." : "Heatmap hidden.");
      event.preventDefault();
      return;
    }
    var link = document.querySelector('[data-key="' + key + '"]');
    if (link) {
      event.preventDefault();
      link.click();
    }
  });

  /* ---- heatmap overlay: opacity slider and show/hide ---- */
  function setHeatmapVisible(box, show) {
    var viewer = box.closest("[data-viewer]");
    if (viewer) viewer.classList.toggle("heatmap-hidden", !show);
  }

  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target.matches("[data-heatmap-opacity]")) {
      var viewer = target.closest("[data-viewer]");
      if (viewer) viewer.style.setProperty("--heatmap-opacity", String(target.value / 100));
      var output = target.parentElement.querySelector("[data-heatmap-opacity-value]");
      if (output) output.textContent = target.value + " %";
    }
    if (target.matches("[data-window-centre], [data-window-width]")) {
      var out = target.parentElement.querySelector("output");
      if (out) out.textContent = target.value;
      scheduleWindow(target.closest("[data-viewer]"));
    }
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-heatmap-toggle]")) setHeatmapVisible(event.target, event.target.checked);
  });

  /* ---- DICOM window/level: the server renders the film through the chosen window ---- */
  var windowTimers = new WeakMap();

  function scheduleWindow(viewer) {
    if (!viewer) return;
    window.clearTimeout(windowTimers.get(viewer));
    windowTimers.set(viewer, window.setTimeout(function () { applyWindow(viewer); }, 200));
  }

  function applyWindow(viewer, reset) {
    window.clearTimeout(windowTimers.get(viewer));
    var img = viewer.querySelector("[data-xray]");
    var centre = viewer.querySelector("[data-window-centre]");
    var width = viewer.querySelector("[data-window-width]");
    if (!img || !centre || !width) return;
    var url = img.getAttribute("data-preview-url");
    var wanted = reset ? url : url + "?wc=" + encodeURIComponent(centre.value) + "&ww=" + encodeURIComponent(width.value);
    if (img.getAttribute("src") !== wanted) img.src = wanted;  // the same window twice is one request
  }

  document.addEventListener("click", function (event) {
    var reset = event.target.closest("[data-window-reset]");
    if (reset) {
      var viewer = reset.closest("[data-viewer]");
      viewer.querySelector("[data-window-centre]").value = 50;
      viewer.querySelector("[data-window-width]").value = 100;
      viewer.querySelectorAll("[data-window-controls] output").forEach(function (output, index) {
        output.textContent = index === 0 ? "50" : "100";
      });
      applyWindow(viewer, true);
      announce("Window reset to the file's own.");
    }
    var apply = event.target.closest("[data-apply-dicom]");
    if (apply) applyDicomSuggestion(apply);
  });

  /* ---- film viewer: zoom, pan, full screen, mouse-drag window/level ----
   * The film and its heatmap sit in one element ([data-viewer-pan]) that is moved and scaled as one, so the
   * overlay stays on the film. Each viewer's state lives in a WeakMap: a fragment htmx swaps in needs no set-up
   * beyond showing its tools (they stay hidden where this script does not run). */
  var MAX_ZOOM = 8;
  var ZOOM_STEP = 1.25;
  var KEY_PAN_PX = 40;
  var views = new WeakMap();
  var gestures = new WeakMap();

  function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }

  function initViewers() {
    document.querySelectorAll("[data-viewer-toolbar][hidden]").forEach(function (el) { el.hidden = false; });
    document.querySelectorAll("[data-viewer-stage]:not([tabindex])").forEach(function (stage) {
      stage.tabIndex = 0;
      // On the film only: a wheel listener that may cancel scrolling, set on the whole page, would make
      // every scroll of it wait for this script.
      stage.addEventListener("wheel", wheelZoom, { passive: false });
    });
  }
  document.addEventListener("DOMContentLoaded", initViewers);
  document.addEventListener("htmx:afterSettle", initViewers);

  function viewState(viewer) {
    var state = views.get(viewer);
    if (!state) {
      state = { scale: 1, x: 0, y: 0 };
      views.set(viewer, state);
    }
    return state;
  }

  function parts(viewer) {
    return { stage: viewer.querySelector("[data-viewer-stage]"), pan: viewer.querySelector("[data-viewer-pan]") };
  }

  /* Keep the film on the stage: a film smaller than the stage is centred, a larger one cannot leave a gap. */
  function keepInView(viewer, state) {
    var p = parts(viewer);
    [["x", p.stage.clientWidth, p.pan.offsetLeft, p.pan.offsetWidth],
     ["y", p.stage.clientHeight, p.pan.offsetTop, p.pan.offsetHeight]].forEach(function (axis) {
      var room = axis[1], offset = axis[2], size = axis[3] * state.scale;
      state[axis[0]] = size <= room ? (room - size) / 2 - offset : clamp(state[axis[0]], room - size - offset, -offset);
    });
  }

  function renderView(viewer) {
    var p = parts(viewer);
    if (!p.stage || !p.pan) return;
    var state = viewState(viewer);
    keepInView(viewer, state);
    p.pan.style.transform = state.scale === 1 && !state.x && !state.y
      ? "" : "translate(" + state.x + "px, " + state.y + "px) scale(" + state.scale + ")";
    viewer.classList.toggle("zoomed", state.scale > 1);
    var level = viewer.querySelector("[data-zoom-level]");
    if (level) level.textContent = "Zoom " + Math.round(state.scale * 100) + " %";
  }

  function stagePoint(stage, event) {
    var box = stage.getBoundingClientRect();
    return { x: event.clientX - box.left, y: event.clientY - box.top };
  }

  /* Zoom by `factor`, keeping the point of the film under `point` (stage pixels; default: the centre) in place. */
  function zoomBy(viewer, factor, point) {
    var p = parts(viewer);
    if (!p.stage || !p.pan) return;
    var state = viewState(viewer);
    var scale = clamp(state.scale * factor, 1, MAX_ZOOM);
    point = point || { x: p.stage.clientWidth / 2, y: p.stage.clientHeight / 2 };
    state.x = point.x - p.pan.offsetLeft - (point.x - p.pan.offsetLeft - state.x) * scale / state.scale;
    state.y = point.y - p.pan.offsetTop - (point.y - p.pan.offsetTop - state.y) * scale / state.scale;
    state.scale = scale;
    renderView(viewer);
  }

  function resetView(viewer) {
    views.set(viewer, { scale: 1, x: 0, y: 0 });
    renderView(viewer);
  }

  function zoomText(viewer) { return "Zoom " + Math.round(viewState(viewer).scale * 100) + " %."; }

  function dragMode(viewer) {
    var chosen = viewer.querySelector("[data-drag-mode]:checked");
    return chosen ? chosen.value : "pan";
  }

  /* Window/level by dragging: sideways changes the width, up and down the centre (a stage's width or
   * height is the whole range); the sliders follow and the film is asked for again, debounced. */
  function setWindowControls(viewer, centre, width) {
    var centreInput = viewer.querySelector("[data-window-centre]");
    var widthInput = viewer.querySelector("[data-window-width]");
    if (!centreInput || !widthInput) return;
    centreInput.value = centre;
    widthInput.value = width;
    [centreInput, widthInput].forEach(function (input) {
      var output = input.parentElement.querySelector("output");
      if (output) output.textContent = input.value;
    });
    scheduleWindow(viewer);
  }

  function wheelZoom(event) {
    var stage = event.currentTarget;
    var viewer = stage.closest("[data-viewer]");
    var factor = Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.0015));
    var scale = viewState(viewer).scale;
    // At either end of the zoom range the wheel scrolls the page as usual.
    if ((factor < 1 && scale <= 1) || (factor > 1 && scale >= MAX_ZOOM)) return;
    event.preventDefault();
    zoomBy(viewer, factor, stagePoint(stage, event));
  }

  document.addEventListener("pointerdown", function (event) {
    var stage = event.target.closest && event.target.closest("[data-viewer-stage]");
    if (!stage || (event.pointerType === "mouse" && event.button !== 0)) return;
    var viewer = stage.closest("[data-viewer]");
    var state = viewState(viewer);
    var gesture = gestures.get(stage) || { pointers: {} };
    gestures.set(stage, gesture);
    var point = stagePoint(stage, event);
    gesture.pointers[event.pointerId] = point;
    var ids = Object.keys(gesture.pointers);
    if (ids.length === 2) {
      var a = gesture.pointers[ids[0]], b = gesture.pointers[ids[1]];
      gesture.kind = "pinch";
      gesture.distance = Math.hypot(a.x - b.x, a.y - b.y) || 1;
      gesture.scale = state.scale;
    } else if (ids.length === 1 && dragMode(viewer) === "window" && viewer.querySelector("[data-window-centre]")) {
      gesture.kind = "window";
      gesture.start = point;
      gesture.centre = Number(viewer.querySelector("[data-window-centre]").value);
      gesture.width = Number(viewer.querySelector("[data-window-width]").value);
    } else if (ids.length === 1 && state.scale > 1) {
      gesture.kind = "pan";
      gesture.start = point;
      gesture.x = state.x;
      gesture.y = state.y;
    } else {
      gesture.kind = null;  // nothing to drag on a film at its own size: a finger scrolls the page
      return;
    }
    stage.setPointerCapture(event.pointerId);
    stage.classList.add("dragging");
    event.preventDefault();  // no text selection, no dragging the picture out of the page
  });

  document.addEventListener("pointermove", function (event) {
    var stage = event.target.closest && event.target.closest("[data-viewer-stage]");
    var gesture = stage && gestures.get(stage);
    if (!gesture || !gesture.kind || !(event.pointerId in gesture.pointers)) return;
    var viewer = stage.closest("[data-viewer]");
    var state = viewState(viewer);
    var point = stagePoint(stage, event);
    gesture.pointers[event.pointerId] = point;
    if (gesture.kind === "pinch") {
      var ids = Object.keys(gesture.pointers);
      var a = gesture.pointers[ids[0]], b = gesture.pointers[ids[1]];
      var wanted = gesture.scale * Math.hypot(a.x - b.x, a.y - b.y) / gesture.distance;
      zoomBy(viewer, wanted / state.scale, { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 });
    } else if (gesture.kind === "pan") {
      state.x = gesture.x + point.x - gesture.start.x;
      state.y = gesture.y + point.y - gesture.start.y;
      renderView(viewer);
    } else if (gesture.kind === "window") {
      setWindowControls(
        viewer,
        clamp(Math.round(gesture.centre + (point.y - gesture.start.y) / stage.clientHeight * 100), 0, 100),
        clamp(Math.round(gesture.width + (point.x - gesture.start.x) / stage.clientWidth * 100), 1, 100)
      );
    }
  });

  function endGesture(event) {
    var stage = event.target.closest && event.target.closest("[data-viewer-stage]");
    var gesture = stage && gestures.get(stage);
    if (!gesture || !(event.pointerId in gesture.pointers)) return;
    delete gesture.pointers[event.pointerId];
    if (gesture.kind === "window") applyWindow(stage.closest("[data-viewer]"));  // the last position, now
    gesture.kind = null;  // lifting one finger of two ends the pinch; it does not turn into a pan
    if (!Object.keys(gesture.pointers).length) stage.classList.remove("dragging");
  }
  document.addEventListener("pointerup", endGesture);
  document.addEventListener("pointercancel", endGesture);

  document.addEventListener("dblclick", function (event) {
    var stage = event.target.closest && event.target.closest("[data-viewer-stage]");
    if (!stage) return;
    var viewer = stage.closest("[data-viewer]");
    if (viewState(viewer).scale > 1) resetView(viewer);
    else zoomBy(viewer, 2, stagePoint(stage, event));
  });

  document.addEventListener("change", function (event) {
    if (!event.target.matches("[data-drag-mode]")) return;
    var viewer = event.target.closest("[data-viewer]");
    viewer.classList.toggle("window-drag", dragMode(viewer) === "window");
    announce(dragMode(viewer) === "window"
      ? "Dragging on the film now changes the window: sideways the width, up and down the level."
      : "Dragging on a zoomed film now moves it.");
  });

  /* Keys on a focused film (so not single-key shortcuts of the page): + and - zoom, arrows move, 0 resets,
   * F full screen. Capture phase: handled before the page's shortcuts, which skip a handled key. */
  document.addEventListener("keydown", function (event) {
    var stage = event.target.closest && event.target.closest("[data-viewer-stage]");
    if (!stage || event.ctrlKey || event.metaKey || event.altKey) return;
    var viewer = stage.closest("[data-viewer]");
    var state = viewState(viewer);
    var moves = { ArrowLeft: [1, 0], ArrowRight: [-1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
    if (event.key === "+" || event.key === "=") {
      zoomBy(viewer, ZOOM_STEP);
      announce(zoomText(viewer));
    } else if (event.key === "-" || event.key === "_") {
      zoomBy(viewer, 1 / ZOOM_STEP);
      announce(zoomText(viewer));
    } else if (event.key === "0") {
      resetView(viewer);
      announce("View reset.");
    } else if (event.key === "f" || event.key === "F") {
      toggleFullscreen(stage);
    } else if (moves[event.key] && state.scale > 1) {
      state.x += moves[event.key][0] * KEY_PAN_PX;
      state.y += moves[event.key][1] * KEY_PAN_PX;
      renderView(viewer);
    } else {
      return;  // an arrow on a film at its own size scrolls the page
    }
    event.preventDefault();
  }, true);

  /* Full screen: the film's area (with the previous study's film when it is shown beside it). Where the
   * Fullscreen API is missing (a phone's browser may lack it), the area fills the window instead. */
  function fullscreenRoot(element) {
    return element.closest("[data-fullscreen-root]") || element.closest("[data-viewer]");
  }

  function maximised() { return document.querySelector(".viewer-maximised"); }

  function toggleFullscreen(element) {
    var root = fullscreenRoot(element);
    if (!root) return;
    if (document.fullscreenElement === root) {
      document.exitFullscreen();
    } else if (root.classList.contains("viewer-maximised")) {
      setMaximised(root, false);
    } else if (document.fullscreenEnabled && root.requestFullscreen) {
      root.requestFullscreen().catch(function () { setMaximised(root, true); });
    } else {
      setMaximised(root, true);
    }
  }

  function setMaximised(root, on) {
    root.classList.toggle("viewer-maximised", on);
    fullscreenChanged(on ? root : null);
  }

  function fullscreenChanged(root) {
    document.querySelectorAll("[data-fullscreen]").forEach(function (button) {
      button.textContent = root && fullscreenRoot(button) === root ? "Exit full screen" : "Full screen";
    });
    document.querySelectorAll("[data-viewer]").forEach(function (viewer) {
      if (!views.has(viewer)) return;
      // The stage changed size: the offsets of the old one mean nothing here; keep the zoom, centre the film.
      var state = viewState(viewer), p = parts(viewer);
      if (p.stage && p.pan) {
        state.x = (p.stage.clientWidth - p.pan.offsetWidth * state.scale) / 2 - p.pan.offsetLeft;
        state.y = (p.stage.clientHeight - p.pan.offsetHeight * state.scale) / 2 - p.pan.offsetTop;
      }
      renderView(viewer);
    });
    announce(root ? "Full screen. Press Escape to leave it." : "Full screen closed.");
  }

  document.addEventListener("fullscreenchange", function () {
    var root = document.fullscreenElement;
    fullscreenChanged(root && root.matches("[data-fullscreen-root], [data-viewer]") ? root : null);
  });
  // Esc leaves full screen: the browser's own handling does, and this covers browsers that pass the key on
  // (a headless one) and the fallback, which is the page's alone.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var root = maximised();
    if (root) setMaximised(root, false);
    var full = document.fullscreenElement;
    if (full && full.matches("[data-fullscreen-root], [data-viewer]")) {
      document.exitFullscreen().catch(function () { /* already leaving */ });
    }
  });
  window.addEventListener("resize", function () {
    document.querySelectorAll("[data-viewer]").forEach(function (viewer) {
      if (views.has(viewer)) renderView(viewer);
    });
  });

  document.addEventListener("click", function (event) {
    var zoom = event.target.closest("[data-zoom]");
    var viewer = event.target.closest("[data-viewer]");
    if (zoom && viewer) {
      zoomBy(viewer, zoom.getAttribute("data-zoom") === "in" ? ZOOM_STEP : 1 / ZOOM_STEP);
      announce(zoomText(viewer));
    }
    if (event.target.closest("[data-view-reset]") && viewer) {
      resetView(viewer);
      announce("View reset.");
    }
    var fullscreen = event.target.closest("[data-fullscreen]");
    if (fullscreen) toggleFullscreen(fullscreen);
    var close = event.target.closest("[data-compare-close]");
    if (close) {
      event.preventDefault();
      var slot = close.closest(".compare-slot");
      var area = close.closest("[data-fullscreen-root]");
      if (slot) slot.innerHTML = "";
      var open = area && area.querySelector("[data-compare-open]");
      if (open) open.focus();
      announce("The previous study is no longer shown.");
    }
  });

  /* The previous study arrives beside the film (htmx): take the keyboard to it and say so. */
  document.addEventListener("htmx:afterSettle", function (event) {
    var slot = event.detail.target;
    if (!slot || !slot.classList || !slot.classList.contains("compare-slot")) return;
    var heading = slot.querySelector("h3");
    if (heading) {
      heading.focus();
      announce(heading.textContent.replace(/\s+/g, " ").trim() + ", shown beside this study's film.");
    }
    var area = slot.closest("[data-fullscreen-root]");
    if (area) area.querySelectorAll("[data-viewer]").forEach(function (viewer) {
      if (views.has(viewer)) renderView(viewer);
    });
  });

  /* ---- upload: drag and drop, a list of chosen files, early refusals, DICOM metadata, progress ---- */
  var MAGIC = [
    { name: "JPEG", offset: 0, bytes: [0xff, 0xd8, 0xff] },
    { name: "PNG", offset: 0, bytes: [0x89, 0x50, 0x4e, 0x47] },
    { name: "DICOM", offset: 128, bytes: [0x44, 0x49, 0x43, 0x4d] }
  ];

  function sniff(file) {
    return file.slice(0, 132).arrayBuffer().then(function (buffer) {
      var head = new Uint8Array(buffer);
      for (var i = 0; i < MAGIC.length; i++) {
        var m = MAGIC[i], ok = head.length >= m.offset + m.bytes.length;
        for (var j = 0; ok && j < m.bytes.length; j++) ok = head[m.offset + j] === m.bytes[j];
        if (ok) return m.name;
      }
      return null;
    });
  }

  function formatSize(bytes) {
    if (bytes >= 1048576) return (bytes / 1048576).toFixed(1) + " MB";
    return Math.max(1, Math.round(bytes / 1024)) + " kB";
  }

  function uploadState(form) {
    if (!form._upload) form._upload = { files: [] };
    return form._upload;
  }

  function addFiles(form, fileList) {
    var state = uploadState(form);
    var limit = parseInt(form.getAttribute("data-max-bytes"), 10) || Infinity;
    var checks = Array.prototype.map.call(fileList, function (file) {
      return sniff(file).then(function (kind) {
        var refusal = "";
        if (!file.size) refusal = "The file is empty.";
        else if (file.size > limit) refusal = "The file is larger than the " + Math.floor(limit / 1048576) + " MB limit.";
        else if (!kind) refusal = "This file is not a JPEG, PNG or DICOM image.";
        return { file: file, kind: kind, refusal: refusal };
      });
    });
    return Promise.all(checks).then(function (entries) {
      state.files = state.files.concat(entries);
      syncInput(form);
      renderFileList(form);
      var refused = entries.filter(function (e) { return e.refusal; }).length;
      var accepted = entries.length - refused;
      announce(accepted + " file" + (accepted === 1 ? "" : "s") + " ready to upload" +
        (refused ? ", " + refused + " refused: see the list." : "."));
      inspectDicom(form);
    });
  }

  function syncInput(form) {
    var input = form.querySelector('input[type="file"]');
    var transfer = new DataTransfer();
    uploadState(form).files.forEach(function (entry) { if (!entry.refusal) transfer.items.add(entry.file); });
    input.files = transfer.files;
  }

  function renderFileList(form) {
    var list = form.querySelector("[data-file-list]");
    list.innerHTML = "";
    uploadState(form).files.forEach(function (entry, index) {
      var item = document.createElement("li");
      item.className = entry.refusal ? "refused" : "accepted";
      var text = document.createElement("span");
      text.textContent = entry.refusal
        ? entry.file.name + ": refused. " + entry.refusal
        : entry.file.name + " (" + entry.kind + ", " + formatSize(entry.file.size) + ")" +
          (uploadState(form).attempted ? ": accepted, not uploaded yet." : "");
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link-button";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove " + entry.file.name);
      remove.addEventListener("click", function () {
        uploadState(form).files.splice(index, 1);
        syncInput(form);
        renderFileList(form);
        announce(entry.file.name + " removed.");
        inspectDicom(form);
        form.querySelector('input[type="file"]').focus();
      });
      item.appendChild(text);
      item.appendChild(document.createTextNode(" "));
      item.appendChild(remove);
      list.appendChild(item);
    });
  }

  function inspectDicom(form) {
    var target = form.querySelector("#dicom-metadata");
    var dicoms = uploadState(form).files.filter(function (e) { return e.kind === "DICOM" && !e.refusal; });
    if (!target) return;
    if (!dicoms.length) { target.innerHTML = ""; return; }
    var data = new FormData();
    data.append("csrfmiddlewaretoken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    dicoms.forEach(function (e) { data.append("images", e.file, e.file.name); });
    fetch(form.getAttribute("data-inspect-url"), { method: "POST", body: data, credentials: "same-origin",
      headers: { "HX-Request": "true" } })
      .then(function (response) { return response.ok ? response.text() : ""; })
      .then(function (html) {
        target.innerHTML = html;
        if (html) announce("DICOM information read from the file is shown below the file list.");
      });
  }

  function applyDicomSuggestion(button) {
    var form = button.closest("form");
    var view = button.getAttribute("data-view-position");
    var modality = button.getAttribute("data-modality");
    var done = [];
    if (view) { form.querySelector("[name=view_position]").value = view; done.push("view position " + view); }
    if (modality) { form.querySelector("[name=modality]").value = modality; done.push("modality " + modality); }
    if (done.length) announce("Set " + done.join(" and ") + " from the DICOM file.");
  }

  document.addEventListener("change", function (event) {
    var input = event.target;
    if (!input.matches('.upload-form input[type="file"]')) return;
    var form = input.closest("form");
    var chosen = Array.prototype.slice.call(input.files);
    uploadState(form).files = [];
    addFiles(form, chosen);
  });

  ["dragenter", "dragover"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      var zone = event.target.closest && event.target.closest("[data-dropzone]");
      if (!zone) return;
      event.preventDefault();
      zone.classList.add("dragging");
    });
  });
  document.addEventListener("dragleave", function (event) {
    var zone = event.target.closest && event.target.closest("[data-dropzone]");
    if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", function (event) {
    var zone = event.target.closest && event.target.closest("[data-dropzone]");
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("dragging");
    addFiles(zone.closest("form"), event.dataTransfer.files);
  });

  document.addEventListener("htmx:xhr:progress", function (event) {
    var form = event.target.closest && event.target.closest(".upload-form");
    if (!form || !event.detail.lengthComputable) return;
    var percent = Math.round((event.detail.loaded / event.detail.total) * 100);
    var box = form.querySelector("[data-upload-progress]");
    box.hidden = false;
    box.querySelector("progress").value = percent;
    box.querySelector("progress").textContent = percent + " %";
    box.querySelector("[data-upload-progress-text]").textContent = percent + " %";
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.target.matches && event.target.matches(".upload-form")) announce("Uploading the study…");
  });

  /* A study is uploaded with all of its files or not at all: with a refused file in the list, nothing is
   * sent, and the summary names each refused file with its reason and each accepted one as not uploaded. */
  function showUploadErrors(form) {
    var old = form.querySelector("#upload-errors");
    if (old) old.remove();
    var summary = document.createElement("div");
    summary.className = "error-summary";
    summary.id = "upload-errors";
    summary.setAttribute("role", "alert");
    summary.tabIndex = -1;
    var heading = document.createElement("h2");
    heading.textContent = "The study was not uploaded";
    var list = document.createElement("ul");
    uploadState(form).files.forEach(function (entry) {
      var item = document.createElement("li");
      var text = entry.file.name + ": " + (entry.refusal || "accepted, not uploaded yet.");
      if (entry.refusal) {
        var strong = document.createElement("strong");
        strong.textContent = text;
        item.appendChild(strong);
      } else {
        item.textContent = text;
      }
      list.appendChild(item);
    });
    var advice = document.createElement("p");
    advice.textContent = "Nothing was sent: a study is uploaded with all of its files or not at all. " +
      "Remove or replace the refused files, then upload the study again.";
    summary.appendChild(heading);
    summary.appendChild(list);
    summary.appendChild(advice);
    form.insertBefore(summary, form.querySelector("[data-dropzone]"));
    var input = form.querySelector('input[type="file"]');
    input.setAttribute("aria-describedby", "images-help upload-errors");
    summary.focus();
  }

  // Capture phase: runs before htmx's own submit handler on the form, which must not send anything.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches(".upload-form")) return;
    var state = uploadState(form);
    if (!state.files.some(function (entry) { return entry.refusal; })) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    state.attempted = true;
    renderFileList(form);
    showUploadErrors(form);
  }, true);

  /* After the server refused the study, the form comes back empty (a page cannot fill in a file input):
   * put the files that were sent back in it, marked as the server judged them, so they can be resent. */
  var sentFiles = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var form = event.detail.target;
    if (form && form.id === "upload-form") sentFiles = uploadState(form).files.slice();
  });
  document.addEventListener("htmx:afterSettle", function () {
    var form = document.getElementById("upload-form");
    var entries = sentFiles;
    sentFiles = null;
    if (!form || !entries || form._upload) return;
    var checks = form.querySelectorAll("[data-upload-check]");
    if (checks.length === entries.length) {
      entries = entries.map(function (entry, index) {
        var reason = checks[index].getAttribute("data-refusal");
        return reason ? { file: entry.file, kind: entry.kind, refusal: reason } : entry;
      });
    }
    var state = uploadState(form);
    state.files = entries;
    state.attempted = true;
    syncInput(form);
    renderFileList(form);
    inspectDicom(form);
  });

  function focusUploadErrors() {
    // A refused upload comes back as the form with its errors: take the keyboard there.
    var summary = document.getElementById("upload-errors");
    if (summary) summary.focus();
  }
  document.addEventListener("DOMContentLoaded", focusUploadErrors);
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.detail.elt && event.detail.elt.id === "upload-form") focusUploadErrors();
  });

  /* ---- the reading queue: focus follows the work ---- */
  /* The first control of the first film nobody has read yet (or the study's own "seen" button), else the
   * link to the next unread study: where the keyboard should be once a reading is recorded. */
  function focusNextReading(after) {
    var sections = Array.prototype.slice.call(document.querySelectorAll("[data-reading][data-unread]"));
    var next = sections.filter(function (section) {
      return !after || (after.compareDocumentPosition(section) & Node.DOCUMENT_POSITION_FOLLOWING);
    })[0] || sections[0];
    var target = next && next.querySelector("input:not([type=hidden]), button, textarea");
    if (!target) target = document.querySelector("[data-next-unread]");
    if (!target) return false;
    target.focus({ preventScroll: true });
    (next || target).scrollIntoView({ block: "start" });
    return true;
  }

  // A reading recorded (htmx swapped the film's section back in): on to the next film, or the next study.
  document.addEventListener("htmx:afterSettle", function (event) {
    // outerHTML: the target is the section that was replaced; its successor has the same id.
    var old = event.detail.target;
    var section = old && old.id ? document.getElementById(old.id) : null;
    if (!section || !section.matches("[data-reading]")) return;
    if (section.hasAttribute("data-unread") || !section.querySelector(".success")) return;  // refused: stay
    if (!focusNextReading(section)) return;
    announce(document.activeElement && document.activeElement.matches("[data-next-unread]")
      ? "Every film of this study is read. Next: the next unread study."
      : "Recorded. Next film's reading form.");
  });

  // Opened from "Next unread" (#reading): the reading form is in view and has the keyboard.
  document.addEventListener("DOMContentLoaded", function () {
    if (window.location.hash === "#reading") focusNextReading(null);
  });
  // Chrome's own scroll to the #reading anchor (at load) leaves the focus on the page: take it back.
  window.addEventListener("load", function () {
    if (window.location.hash === "#reading" && document.activeElement === document.body) focusNextReading(null);
  });

  /* ---- worklist filters: closed on a phone, so the first study is on the first screen ---- */
  var NARROW = window.matchMedia("(max-width: 40rem)");
  function fitDisclosures() {
    document.querySelectorAll("details[data-collapse-narrow]").forEach(function (details) {
      details.open = !NARROW.matches;
    });
  }
  fitDisclosures();
  if (NARROW.addEventListener) NARROW.addEventListener("change", fitDisclosures);
  // The closed summary says how many filters narrow the list (the order is not one).
  document.addEventListener("change", function (event) {
    var form = event.target.closest && event.target.closest("#worklist-filters");
    var note = form && form.querySelector("[data-filters-in-use]");
    if (!note) return;
    var used = 0;
    new FormData(form).forEach(function (value, key) { if (key !== "sort" && value !== "") used += 1; });
    note.textContent = used ? "(" + used + " in use)" : "";
  });

  /* ---- worklist filters: one history entry per change of the filters ---- */
  // Typing fires keyup (after a pause) and then change when the field is left, both for the same filters:
  // the second request would push the same URL again, and Back would seem to do nothing.
  function sameQuery(a, b) {
    function normal(search) {
      var params = new URLSearchParams(search), kept = [];
      params.forEach(function (value, key) { if (value !== "") kept.push(key + "=" + value); });
      return kept.sort().join("&");
    }
    return normal(a) === normal(b);
  }
  document.addEventListener("htmx:configRequest", function (event) {
    var form = event.detail.elt;
    if (!form || form.id !== "worklist-filters" || event.detail.verb !== "get") return;
    var query = new URLSearchParams();
    event.detail.formData.forEach(function (value, key) { query.append(key, value); });
    if (sameQuery(query.toString(), window.location.search)) event.preventDefault();
  });
})();
