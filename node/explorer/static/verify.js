/*
 * wulian explorer: verify record files against evidence codes.
 *
 * Each row: an evidence code, the original record file, and its 32-byte salt (typed
 * as hex or picked as a file). The record is hashed HERE, in the browser:
 *
 *     commitment = SHA-256( "wulian:record/v1" || 0x00 || salt || record bytes )
 *
 * (docs/receipts.md, tag record/v1), and only {code, commitment} is sent to the node.
 * The file's bytes never leave this computer.
 *
 * Batch filing: "Add files" accepts many files at once; NAME.salt and
 * NAME.receipt.json are paired with the record NAME (the receipt supplies the code).
 *
 * A lender's record file as `wulian evidence --record-out` writes it (JSON
 * {"format": "wulian-record/1", "data": hex, "salt": hex, ...}) is read, here too, for
 * the record bytes and salt inside it; any other file is hashed as it is.
 */
(function () {
  "use strict";
  var S = window.WulianSHA256;
  var root = document.getElementById("verifier");
  if (!root || !S) return;
  var L = JSON.parse(root.getAttribute("data-labels") || "{}");
  var api = root.getAttribute("data-api");
  var csrf = root.getAttribute("data-csrf");
  var rowsEl = document.getElementById("rows");
  var tmpl = document.getElementById("row-template");
  var progress = document.getElementById("verify-progress");
  var TAG = S.utf8("wulian:record/v1\u0000");
  var CHUNK = 4 * 1024 * 1024;
  var RECORD_DOC_MAX = 64 * 1024 * 1024;
  var rows = [];

  function label(key) { return L[key] || key; }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function renumber() {
    rows.forEach(function (r, i) { r.idx.textContent = String(i + 1); });
  }

  function addRow(code) {
    var frag = tmpl.content.cloneNode(true);
    var tr = frag.querySelector("tr.vrow");
    var detailTr = frag.querySelector("tr.vdetail");
    var row = {
      tr: tr,
      detailTr: detailTr,
      detail: detailTr.querySelector(".detail"),
      idx: tr.querySelector(".idx"),
      code: tr.querySelector("input.code"),
      recordInput: tr.querySelector("input.record"),
      fname: tr.querySelector(".fname"),
      saltText: tr.querySelector("input.salt-text"),
      saltInput: tr.querySelector("input.salt-file"),
      status: tr.querySelector(".status"),
      file: null,
      saltFile: null
    };
    if (code) row.code.value = code;
    row.recordInput.addEventListener("change", function () {
      row.file = row.recordInput.files[0] || null;
      row.fname.textContent = "";
    });
    row.saltInput.addEventListener("change", function () {
      row.saltFile = row.saltInput.files[0] || null;
    });
    tr.querySelector("button.remove").addEventListener("click", function () {
      rows.splice(rows.indexOf(row), 1);
      tr.remove();
      detailTr.remove();
      renumber();
    });
    rowsEl.appendChild(frag);
    rows.push(row);
    renumber();
    return row;
  }

  function readText(file) {
    return file.arrayBuffer().then(function (buf) { return new TextDecoder().decode(buf); });
  }

  // The salt: typed hex wins; else a salt file holding 32 raw bytes, 64 hex digits,
  // or JSON {"salt": "<hex>"}.
  function readSalt(row) {
    var typed = row.saltText.value.trim();
    if (typed) return Promise.resolve(S.fromHex(typed));
    if (!row.saltFile) return Promise.resolve(null);
    return row.saltFile.arrayBuffer().then(function (buf) {
      var bytes = new Uint8Array(buf);
      if (bytes.length === 32) return bytes;
      var text = new TextDecoder().decode(bytes).trim();
      if (text.charAt(0) === "{") {
        try { text = String(JSON.parse(text).salt || ""); } catch (e) { return null; }
      }
      return S.fromHex(text);
    });
  }

  // {data, salt} from a wulian-record/1 file; null for any other file.
  function readRecordDocument(file) {
    if (!file || file.size > RECORD_DOC_MAX) return Promise.resolve(null);
    return file.slice(0, 1).arrayBuffer().then(function (head) {
      if (new Uint8Array(head)[0] !== 0x7b) return null; // not "{": not JSON
      return readText(file).then(function (text) {
        var doc;
        try { doc = JSON.parse(text); } catch (e) { return null; }
        if (!doc || doc.format !== "wulian-record/1") return null;
        var data = typeof doc.data === "string" ? S.fromHex(doc.data) : null;
        var salt = typeof doc.salt === "string" ? S.fromHex(doc.salt) : null;
        if (!data || !salt) return null;
        return { data: data, salt: salt };
      });
    });
  }

  // The commitment of a File (read in chunks) or of bytes (Uint8Array).
  function commitment(file, salt) {
    var h = new S.Sha256();
    h.update(TAG);
    h.update(salt);
    if (file instanceof Uint8Array) {
      h.update(file);
      return Promise.resolve(S.toHex(h.digest()));
    }
    var offset = 0;
    function next() {
      if (offset >= file.size) return Promise.resolve(S.toHex(h.digest()));
      var end = Math.min(offset + CHUNK, file.size);
      return file.slice(offset, end).arrayBuffer().then(function (buf) {
        h.update(new Uint8Array(buf));
        offset = end;
        return next();
      });
    }
    return next();
  }

  function setStatus(row, status, text) {
    row.status.textContent = "";
    var badge = el("span", "badge st-" + status, text);
    badge.setAttribute("data-status", status);
    row.status.appendChild(badge);
  }

  function showDetail(row, res) {
    var d = row.detail;
    d.textContent = "";
    row.detailTr.hidden = false;
    if (res.error) d.appendChild(el("p", "alert", res.error));
    if (res.suggestions && res.suggestions.length) {
      var p = el("p", "suggestions", label("did_you_mean") + " ");
      res.suggestions.forEach(function (s) {
        var b = el("button", "linkish code suggestion", s);
        b.type = "button";
        b.addEventListener("click", function () { row.code.value = s; });
        p.appendChild(b);
        p.appendChild(document.createTextNode(" "));
      });
      d.appendChild(p);
    }
    var dl = el("dl", "facts");
    function fact(k, v) {
      if (v === null || v === undefined || v === "") return;
      dl.appendChild(el("dt", null, label(k)));
      dl.appendChild(el("dd", "mono", v));
    }
    fact("evidence_code", res.code);
    fact("submitted_digest", res.submitted);
    fact("anchored_digest", res.anchored);
    fact("anchored_by", res.anchored_time);
    d.appendChild(dl);
    if (res.checks && res.checks.length) {
      var ul = el("ul", "checks");
      res.checks.forEach(function (c) {
        var mark = c.status === "pass" ? "✓" : c.status === "fail" ? "✗" : "–";
        var li = el("li", "chk-" + c.status, mark + " " + c.label + ": " + c.status_label +
          (c.reason ? " — " + c.reason : "") + (c.detail && c.status === "fail" ? " (" + c.detail + ")" : ""));
        li.setAttribute("data-check", c.name);
        li.setAttribute("data-status", c.status);
        ul.appendChild(li);
      });
      d.appendChild(ul);
    }
    if (res.evidence_url) {
      var a = el("a", null, label("open") + " " + res.code);
      a.href = res.evidence_url;
      d.appendChild(a);
    }
  }

  function fillReportForms(items) {
    var box = document.getElementById("report-box");
    ["report-form", "pdf-form"].forEach(function (id) {
      var span = document.getElementById(id).querySelector(".items");
      span.textContent = "";
      items.forEach(function (it) {
        var input = document.createElement("input");
        input.type = "hidden";
        input.name = "item";
        input.value = it.code + ":" + it.commitment;
        span.appendChild(input);
      });
    });
    box.hidden = items.length === 0;
  }

  function verifyAll() {
    var jobs = [];
    var ready = [];
    rows.forEach(function (row) {
      row.detailTr.hidden = true;
      var code = row.code.value.trim();
      var file = row.file || (row.recordInput.files && row.recordInput.files[0]) || null;
      if (!code && !file) return;
      setStatus(row, "busy", label("computing"));
      jobs.push(Promise.all([readSalt(row), readRecordDocument(file)]).then(function (got) {
        var salt = got[0], doc = got[1];
        if (!code) throw new Error(label("evidence_code") + "?");
        if (!file) throw new Error(label("record_file") + "?");
        if (!salt && doc) salt = doc.salt; // a typed salt or .salt file wins
        if (!salt || salt.length !== 32) throw new Error(label("salt") + ": " + label("salt_hint"));
        return commitment(doc ? doc.data : file, salt).then(function (c) {
          ready.push({ row: row, code: code, commitment: c });
        });
      }).catch(function (err) {
        setStatus(row, "input", err.message);
      }));
    });
    if (!jobs.length) return;
    progress.textContent = label("computing");
    Promise.all(jobs).then(function () {
      if (!ready.length) { progress.textContent = ""; return null; }
      var items = ready.map(function (r) { return { code: r.code, commitment: r.commitment }; });
      return fetch(api, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ items: items })
      }).then(function (resp) {
        if (resp.status === 401) throw new Error(label("session_expired"));
        if (resp.status === 403) throw new Error(label("csrf_failed"));
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      }).then(function (doc) {
        doc.results.forEach(function (res, i) {
          var row = ready[i].row;
          setStatus(row, res.status, res.status_label);
          showDetail(row, res);
        });
        fillReportForms(items);
        progress.textContent = "";
      });
    }).catch(function (err) {
      progress.textContent = err.message;
    });
  }

  function addFiles(fileList) {
    var salts = {}, receipts = {}, records = [];
    Array.prototype.forEach.call(fileList, function (f) {
      var n = f.name;
      if (/\.salt$/i.test(n)) salts[n.replace(/\.salt$/i, "")] = f;
      else if (/\.receipt\.json$/i.test(n)) receipts[n.replace(/\.receipt\.json$/i, "")] = f;
      else records.push(f);
    });
    // Reuse one empty row (the page starts with one).
    records.forEach(function (f) {
      var row = rows.filter(function (r) {
        return !r.file && !r.code.value && !(r.recordInput.files && r.recordInput.files.length);
      })[0] || addRow("");
      row.file = f;
      row.fname.textContent = f.name;
      if (salts[f.name]) row.saltFile = salts[f.name];
      var rf = receipts[f.name];
      if (rf) {
        readText(rf).then(function (text) {
          try {
            var doc = JSON.parse(text);
            if (doc && typeof doc.evidence_code === "string") row.code.value = doc.evidence_code;
          } catch (e) { /* not a receipt: leave the code to the clerk */ }
        });
      }
    });
  }

  document.getElementById("add-row").addEventListener("click", function () { addRow(""); });
  document.getElementById("verify-all").addEventListener("click", verifyAll);
  var batch = document.getElementById("batch-files");
  batch.addEventListener("change", function () { addFiles(batch.files); batch.value = ""; });
  addRow(root.getAttribute("data-initial-code") || "");

  // For tests and other pages: the commitment function.
  window.WulianVerify = { commitment: commitment, rows: rows, addFiles: addFiles };
})();
