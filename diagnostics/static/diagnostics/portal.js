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
    var img = viewer.querySelector("[data-xray]");
    var centre = viewer.querySelector("[data-window-centre]");
    var width = viewer.querySelector("[data-window-width]");
    if (!img || !centre || !width) return;
    var url = img.getAttribute("data-preview-url");
    img.src = reset ? url : url + "?wc=" + encodeURIComponent(centre.value) + "&ww=" + encodeURIComponent(width.value);
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
})();
