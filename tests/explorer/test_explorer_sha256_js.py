"""The explorer's own JavaScript SHA-256 (node/explorer/static/sha256.js), run with
Node.js, against the FIPS 180-4 / NIST vectors and Python's hashlib — whole inputs
and the same inputs fed in pieces, as the verify page feeds a file in chunks — and
the record commitment of docs/receipts.md against ``ledger.hashing.tagged_hash``.
(The browser tests run the same vectors in Chromium.)"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess

import pytest

from ledger.hashing import TAG_RECORD, tagged_hash
from node.explorer.render import STATIC_DIR

NODE = shutil.which("node") or shutil.which("nodejs")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

#: (message, repetitions, SHA-256) — FIPS 180-4 examples and the NIST long messages.
NIST_VECTORS = [
    ("", 1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ("abc", 1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        1,
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
        "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
        1,
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
    ),
    ("a", 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
]

_RUNNER = """
const S = require(process.argv[1]);
const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = cases.map(c => {
  const h = new S.Sha256();
  if (c.repeat) {
    const piece = S.utf8(c.text);
    for (let i = 0; i < c.repeat; i++) h.update(piece);
  } else {
    const data = S.fromHex(c.hex);
    let off = 0;
    for (const n of c.splits) { h.update(data.subarray(off, off + n)); off += n; }
    h.update(data.subarray(off));
  }
  return S.toHex(h.digest());
});
process.stdout.write(JSON.stringify(out));
"""


def run_js(cases: list[dict[str, object]]) -> list[str]:
    assert NODE is not None
    out = subprocess.run(
        [NODE, "-e", _RUNNER, str(STATIC_DIR / "sha256.js")],
        input=json.dumps(cases).encode(),
        capture_output=True,
        check=True,
        timeout=60,
    )
    result: list[str] = json.loads(out.stdout)
    return result


def test_nist_vectors() -> None:
    cases: list[dict[str, object]] = [{"text": t, "repeat": n} for t, n, _ in NIST_VECTORS]
    assert run_js(cases) == [d for _, _, d in NIST_VECTORS]


def test_random_inputs_whole_and_in_pieces_match_hashlib() -> None:
    rng = random.Random(20240808)
    lengths = [*range(0, 200), 255, 256, 511, 512, 1000, 4095, 4096, 65_537]
    cases: list[dict[str, object]] = []
    expected = []
    for n in lengths:
        data = rng.randbytes(n)
        splits = []
        left = n
        while left > 0 and rng.random() < 0.8:
            k = rng.randint(0, min(left, 130))
            splits.append(k)
            left -= k
        cases.append({"hex": data.hex(), "splits": splits})
        expected.append(hashlib.sha256(data).hexdigest())
    assert run_js(cases) == expected


def test_record_commitment_matches_the_spec() -> None:
    """commitment = SHA-256("wulian:record/v1" || 0x00 || salt || record)."""
    rng = random.Random(7)
    record, salt = rng.randbytes(3000), rng.randbytes(32)
    prefix = b"wulian:record/v1\x00"
    (js,) = run_js([{"hex": (prefix + salt + record).hex(), "splits": [len(prefix), 32, 1000]}])
    assert js == tagged_hash(TAG_RECORD, salt + record).hex()
