/*
 * SHA-256 (FIPS 180-4) in plain JavaScript, incremental, for the wulian explorer.
 *
 * The clerk's record file is hashed in the browser and never uploaded. Browsers hide
 * crypto.subtle on plain-HTTP pages (outside localhost), so the explorer ships this.
 *
 *   var h = new WulianSHA256.Sha256();
 *   h.update(bytes1); h.update(bytes2);            // Uint8Array pieces, any sizes
 *   var digest = h.digest();                        // Uint8Array(32); h is then spent
 *   WulianSHA256.toHex(digest);
 *
 * Also usable from Node.js (module.exports), which the tests use to check it against
 * the NIST vectors and Python's hashlib.
 */
(function (root) {
  "use strict";

  var K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ]);

  var H0 = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
  ];

  function Sha256() {
    this.h = new Uint32Array(H0);
    this.w = new Uint32Array(64);
    this.buf = new Uint8Array(64);
    this.bufLen = 0;
    this.length = 0; // bytes hashed so far (exact up to 2^53)
    this.finished = false;
  }

  // One 64-byte block of p starting at off.
  Sha256.prototype._block = function (p, off) {
    var w = this.w, h = this.h, t, x, y, s0, s1;
    for (t = 0; t < 16; t++) {
      w[t] = (p[off] << 24) | (p[off + 1] << 16) | (p[off + 2] << 8) | p[off + 3];
      off += 4;
    }
    for (t = 16; t < 64; t++) {
      x = w[t - 15];
      y = w[t - 2];
      s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
    }
    var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (t = 0; t < 64; t++) {
      var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      var ch = (e & f) ^ (~e & g);
      var t1 = (hh + S1 + ch + K[t] + w[t]) | 0;
      var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      var maj = (a & b) ^ (a & c) ^ (b & c);
      var t2 = (S0 + maj) | 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  };

  /** Hash more bytes (a Uint8Array). Returns this. */
  Sha256.prototype.update = function (data) {
    if (this.finished) throw new Error("sha256: update after digest");
    if (!(data instanceof Uint8Array)) throw new TypeError("sha256: expected a Uint8Array");
    var i = 0, n = data.length;
    this.length += n;
    if (this.bufLen > 0) {
      while (i < n && this.bufLen < 64) this.buf[this.bufLen++] = data[i++];
      if (this.bufLen < 64) return this;
      this._block(this.buf, 0);
      this.bufLen = 0;
    }
    while (n - i >= 64) {
      this._block(data, i);
      i += 64;
    }
    while (i < n) this.buf[this.bufLen++] = data[i++];
    return this;
  };

  /** Finish: the 32-byte digest (a Uint8Array). The object cannot be updated after. */
  Sha256.prototype.digest = function () {
    if (this.finished) throw new Error("sha256: digest called twice");
    this.finished = true;
    var len = this.length;
    var pad = new Uint8Array(((this.bufLen < 56) ? 56 : 120) - this.bufLen + 8);
    pad[0] = 0x80;
    // Bit length, 64-bit big-endian: len * 8 split without losing precision.
    var hi = Math.floor(len / 0x20000000);
    var lo = (len % 0x20000000) * 8;
    var m = pad.length;
    pad[m - 8] = hi >>> 24; pad[m - 7] = (hi >>> 16) & 255; pad[m - 6] = (hi >>> 8) & 255;
    pad[m - 5] = hi & 255;
    pad[m - 4] = lo >>> 24; pad[m - 3] = (lo >>> 16) & 255; pad[m - 2] = (lo >>> 8) & 255;
    pad[m - 1] = lo & 255;
    this.finished = false;
    this.update(pad);
    this.finished = true;
    var out = new Uint8Array(32);
    for (var i = 0; i < 8; i++) {
      var v = this.h[i];
      out[4 * i] = v >>> 24;
      out[4 * i + 1] = (v >>> 16) & 255;
      out[4 * i + 2] = (v >>> 8) & 255;
      out[4 * i + 3] = v & 255;
    }
    return out;
  };

  function sha256(bytes) {
    return new Sha256().update(bytes).digest();
  }

  function toHex(bytes) {
    var s = "";
    for (var i = 0; i < bytes.length; i++) s += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    return s;
  }

  /** Lowercase/uppercase hex (whitespace ignored) to bytes; null if not hex. */
  function fromHex(text) {
    var s = String(text).replace(/\s+/g, "");
    if (s.length % 2 !== 0 || /[^0-9a-fA-F]/.test(s)) return null;
    var out = new Uint8Array(s.length / 2);
    for (var i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
    return out;
  }

  /** UTF-8 bytes of an ASCII/Unicode string. */
  function utf8(text) {
    return new TextEncoder().encode(text);
  }

  var api = { Sha256: Sha256, sha256: sha256, toHex: toHex, fromHex: fromHex, utf8: utf8 };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.WulianSHA256 = api;
})(typeof self !== "undefined" ? self : this);
