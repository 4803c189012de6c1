"""An independent verifier of wulian evidence receipts, written from docs/receipts.md.

It imports nothing from the project: only the standard library and PyNaCl's Ed25519.
Usage::

    python tests/independent_verifier.py RECEIPT.json TRUST_ROOT.json [RECORD SALT]
    python tests/independent_verifier.py --vectors tests/vectors/receipts

``verify(receipt, trust_root, record=None, salt=None, commitment=None)`` returns the
nine checks of §8 as ``[name, status, reason]`` lists.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import nacl.signing

# -- §2.1 canonical encoding ------------------------------------------------------


def enc(v: Any) -> bytes:
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v <= 127:
            return bytes([v])
        if 128 <= v <= 0xFF:
            return b"\xcc" + v.to_bytes(1, "big")
        if 0x100 <= v <= 0xFFFF:
            return b"\xcd" + v.to_bytes(2, "big")
        if 0x10000 <= v <= 0xFFFFFFFF:
            return b"\xce" + v.to_bytes(4, "big")
        if 2**32 <= v <= 2**64 - 1:
            return b"\xcf" + v.to_bytes(8, "big")
        if -32 <= v <= -1:
            return bytes([v + 256])
        if -128 <= v <= -33:
            return b"\xd0" + v.to_bytes(1, "big", signed=True)
        if -32768 <= v <= -129:
            return b"\xd1" + v.to_bytes(2, "big", signed=True)
        if -(2**31) <= v <= -32769:
            return b"\xd2" + v.to_bytes(4, "big", signed=True)
        if -(2**63) <= v < -(2**31):
            return b"\xd3" + v.to_bytes(8, "big", signed=True)
        raise ValueError("integer out of range")
    if isinstance(v, str):
        b = v.encode("utf-8")
        n = len(b)
        if n <= 31:
            return bytes([0xA0 + n]) + b
        if n <= 0xFF:
            return b"\xd9" + n.to_bytes(1, "big") + b
        if n <= 0xFFFF:
            return b"\xda" + n.to_bytes(2, "big") + b
        return b"\xdb" + n.to_bytes(4, "big") + b
    if isinstance(v, bytes):
        n = len(v)
        if n <= 0xFF:
            return b"\xc4" + n.to_bytes(1, "big") + v
        if n <= 0xFFFF:
            return b"\xc5" + n.to_bytes(2, "big") + v
        return b"\xc6" + n.to_bytes(4, "big") + v
    if isinstance(v, list):
        n = len(v)
        if n <= 15:
            head = bytes([0x90 + n])
        elif n <= 0xFFFF:
            head = b"\xdc" + n.to_bytes(2, "big")
        else:
            head = b"\xdd" + n.to_bytes(4, "big")
        return head + b"".join(enc(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        if n <= 15:
            head = bytes([0x80 + n])
        elif n <= 0xFFFF:
            head = b"\xde" + n.to_bytes(2, "big")
        else:
            head = b"\xdf" + n.to_bytes(4, "big")
        keys = sorted(v, key=lambda k: k.encode("utf-8"))
        return head + b"".join(enc(k) + enc(v[k]) for k in keys)
    raise ValueError(f"cannot encode {type(v).__name__}")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def value(self, depth: int = 0) -> Any:
        if depth > 64:
            raise ValueError("too deep")
        t = self.take(1)[0]
        if t <= 0x7F:
            return t
        if t >= 0xE0:
            return t - 256
        if 0xA0 <= t <= 0xBF:
            return self.take(t - 0xA0).decode("utf-8")
        if 0x90 <= t <= 0x9F:
            return [self.value(depth + 1) for _ in range(t - 0x90)]
        if 0x80 <= t <= 0x8F:
            return self.map(t - 0x80, depth)
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if t in simple:
            return simple[t]
        sizes = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
        if t in sizes:
            return self.uint(sizes[t])
        ssizes = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
        if t in ssizes:
            return int.from_bytes(self.take(ssizes[t]), "big", signed=True)
        strs = {0xD9: 1, 0xDA: 2, 0xDB: 4}
        if t in strs:
            return self.take(self.uint(strs[t])).decode("utf-8")
        bins = {0xC4: 1, 0xC5: 2, 0xC6: 4}
        if t in bins:
            return self.take(self.uint(bins[t]))
        if t in (0xDC, 0xDD):
            n = self.uint(2 if t == 0xDC else 4)
            return [self.value(depth + 1) for _ in range(n)]
        if t in (0xDE, 0xDF):
            return self.map(self.uint(2 if t == 0xDE else 4), depth)
        raise ValueError(f"type byte {t:#x} not allowed")

    def map(self, n: int, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for _ in range(n):
            k = self.value(depth + 1)
            if not isinstance(k, str) or k in out:
                raise ValueError("bad map key")
            out[k] = self.value(depth + 1)
        return out


def dec(b: bytes) -> Any:
    r = _Reader(b)
    v = r.value()
    if r.pos != len(b) or enc(v) != b:
        raise ValueError("not canonical")
    return v


# -- §2.2–2.4 hashes, Merkle trees, signatures ---------------------------------------


def th(tag: str, data: bytes) -> bytes:
    return hashlib.sha256(b"wulian:" + tag.encode("ascii") + b"\x00" + data).digest()


def leaf_hash(d: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + d).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def inclusion_ok(d: bytes, i: int, n: int, proof: list[bytes], root: bytes) -> bool:
    if n == 0 or i >= n:
        return False
    fn, sn, r = i, n - 1, leaf_hash(d)
    for p in proof:
        if len(p) != 32 or sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def sig_ok(pk: bytes, tag: str, msg: bytes, sig: bytes) -> bool:
    if len(pk) != 32 or len(sig) != 64:
        return False
    try:
        nacl.signing.VerifyKey(pk).verify(b"wulian-sig:" + tag.encode("ascii") + b"\x00" + msg, sig)
    except Exception:
        return False
    return True


# -- §3 objects, §4 certificates ---------------------------------------------------

HEADER_INTS = ("h", "n", "rn", "sh", "view", "t")
HEADER_HEX = ("prev", "txr", "rr", "sr")
HEADER_STRS = ("ch", "prop")
HEADER_KEYS = {"v", *HEADER_INTS, *HEADER_HEX, *HEADER_STRS}


def header_map(h: dict[str, Any]) -> dict[str, Any]:
    return {k: (bytes.fromhex(v) if k in HEADER_HEX else v) for k, v in h.items()}


def header_hash(h: dict[str, Any]) -> bytes:
    return th("block-header/v1", enc(header_map(h)))


def record_leaf(t: str, tx: bytes, i: int, c: bytes) -> bytes:
    return enc({"v": 1, "type": t, "tx": tx, "i": i, "c": c})


def quorum(n: int) -> int:
    f = (n - 1) // 3
    return (n + f + 2) // 2


def certifies(cert: dict[str, Any], channel: str, header: dict[str, Any], vset: list) -> bool:
    b = bytes.fromhex(cert["b"])
    if cert["ch"] != channel or cert["h"] != header["h"] or b != header_hash(header):
        return False
    msg = enc({"b": b, "ch": cert["ch"], "h": cert["h"], "v": cert["view"]})
    keys = dict(vset)
    seen: set[str] = set()
    for vid, sig in cert["votes"]:
        if vid in seen or vid not in keys:
            return False
        seen.add(vid)
        if not sig_ok(keys[vid], "commit-vote/v1", msg, bytes.fromhex(sig)):
            return False
    return len(seen) >= quorum(len(vset))


# -- §5 validator history --------------------------------------------------------

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def is_name(v: Any) -> bool:
    return (
        isinstance(v, str)
        and 1 <= len(v) <= 64
        and set(v) <= NAME_CHARS
        and v[0] in "abcdefghijklmnopqrstuvwxyz0123456789"
    )


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_change(p: Any, h: int) -> tuple[int, tuple] | None:
    """The (eff, change) of a config_update payload, or None if it is skipped."""
    if not isinstance(p, dict) or set(p) != {"change", "eff", "approvals"}:
        return None
    ap = p["approvals"]
    if not isinstance(ap, list) or len(ap) > 64:
        return None
    for a in ap:
        if not (
            isinstance(a, list)
            and len(a) == 2
            and isinstance(a[0], str)
            and isinstance(a[1], bytes)
        ):
            return None
    eff = p["eff"]
    if not is_int(eff) or not h + 8 < eff <= 2**63 - 1:
        return None
    c = p["change"]
    if not isinstance(c, dict) or not isinstance(c.get("kind"), str) or len(c["kind"]) > 32:
        return None
    if c["kind"] == "add_validator" and set(c) == {"kind", "node"}:
        n = c["node"]
        if not isinstance(n, dict) or set(n) != {"id", "org", "pk", "addr"}:
            return None
        addr = n["addr"]
        if not (
            is_name(n["id"])
            and is_name(n["org"])
            and isinstance(n["pk"], bytes)
            and len(n["pk"]) == 32
            and isinstance(addr, str)
            and len(addr) <= 256
            and addr.startswith(("http://", "https://"))
        ):
            return None
        return eff, ("add", n["id"], n["pk"])
    if c["kind"] == "remove_validator" and set(c) == {"kind", "node_id"}:
        if not is_name(c["node_id"]):
            return None
        return eff, ("remove", c["node_id"])
    return None


class History:
    def __init__(self, channel: str, genesis: list[tuple[str, bytes]]) -> None:
        self.channel = channel
        self.genesis = genesis
        self.accepted: list[tuple[int, tuple]] = []
        self.last = 0

    def replay(self, changes: list[tuple[int, tuple]]) -> list[tuple[str, bytes]] | None:
        vs = list(self.genesis)
        for _, ch in sorted(changes, key=lambda c: c[0]):
            ids = [v[0] for v in vs]
            if ch[0] == "add":
                if ch[1] in ids or any(v[1] == ch[2] for v in vs):
                    return None
                vs.append((ch[1], ch[2]))
            else:
                if ch[1] not in ids or len(vs) == 1:
                    return None
                vs = [v for v in vs if v[0] != ch[1]]
        return vs

    def set_at(self, x: int) -> list[tuple[str, bytes]]:
        vs = self.replay([c for c in self.accepted if c[0] <= x])
        assert vs is not None
        return vs

    def apply_step(self, step: dict[str, Any]) -> bool:
        header = step["header"]
        h = header["h"]
        if header["ch"] != self.channel or h <= self.last:
            return False
        if not certifies(step["certificate"], self.channel, header, self.set_at(h)):
            return False
        payloads = []
        last_index = -1
        for t in step["txs"]:
            body = bytes.fromhex(t["body"])
            if t["index"] <= last_index:
                return False
            last_index = t["index"]
            proof = [bytes.fromhex(p) for p in t["proof"]]
            if not inclusion_ok(
                th("tx/v1", body), t["index"], header["n"], proof, bytes.fromhex(header["txr"])
            ):
                return False
            try:
                m = dec(body)
            except (ValueError, UnicodeDecodeError):
                return False
            if (
                not isinstance(m, dict)
                or m.get("type") != "config_update"
                or m.get("ch") != self.channel
                or not isinstance(m.get("p"), dict)
            ):
                return False
            payloads.append(m["p"])
        for p in payloads:
            change = parse_change(p, h)
            if change is not None and self.replay([*self.accepted, change]) is not None:
                self.accepted.append(change)
        self.last = h
        return True


# -- §6 evidence codes -----------------------------------------------------------

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def evidence_code(leaf: bytes) -> str:
    value = int.from_bytes(th("evidence-code/v1", leaf)[:10], "big")
    body = "".join(ALPHABET[(value >> (5 * (15 - i))) & 31] for i in range(16))
    check = (ALPHABET + "*~$=U")[value % 37]
    return "WL-" + "-".join(body[i : i + 4] for i in range(0, 16, 4)) + "-" + check


# -- §7 format -------------------------------------------------------------------


def _keys(v: Any, keys: set[str]) -> bool:
    return isinstance(v, dict) and set(v) == keys


def _int_ok(v: Any) -> bool:
    return is_int(v) and 0 <= v <= 2**63 - 1


def _str_ok(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _hex_ok(v: Any, size: int | None = None, max_chars: int = 4096) -> bool:
    return (
        isinstance(v, str)
        and len(v) % 2 == 0
        and len(v) <= max_chars
        and all(c in "0123456789abcdef" for c in v)
        and (size is None or len(v) == 2 * size)
    )


def _proof_ok(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= 64 and all(_hex_ok(p, 32) for p in v)


def _header_ok(h: Any) -> bool:
    return (
        _keys(h, HEADER_KEYS)
        and _int_ok(h["v"])
        and h["v"] == 1
        and all(_int_ok(h[k]) for k in HEADER_INTS)
        and all(_hex_ok(h[k], 32) for k in HEADER_HEX)
        and all(_str_ok(h[k]) for k in HEADER_STRS)
    )


def _cert_ok(c: Any) -> bool:
    if not _keys(c, {"v", "ch", "h", "view", "b", "votes"}):
        return False
    if not (
        _int_ok(c["v"])
        and c["v"] == 1
        and _str_ok(c["ch"])
        and _int_ok(c["h"])
        and _int_ok(c["view"])
        and _hex_ok(c["b"], 32)
    ):
        return False
    votes = c["votes"]
    return (
        isinstance(votes, list)
        and len(votes) <= 1024
        and all(
            isinstance(v, list) and len(v) == 2 and _str_ok(v[0]) and _hex_ok(v[1], max_chars=256)
            for v in votes
        )
    )


def _step_ok(s: Any) -> bool:
    if not _keys(s, {"header", "certificate", "txs"}):
        return False
    if not (_header_ok(s["header"]) and _cert_ok(s["certificate"])):
        return False
    txs = s["txs"]
    return (
        isinstance(txs, list)
        and len(txs) <= 64
        and all(
            _keys(t, {"body", "index", "proof"})
            and _hex_ok(t["body"], max_chars=526_336)
            and _int_ok(t["index"])
            and _proof_ok(t["proof"])
            for t in txs
        )
    )


def _side_ok(v: Any) -> bool:
    return (
        _keys(v, {"header", "certificate", "config"})
        and _header_ok(v["header"])
        and _cert_ok(v["certificate"])
        and isinstance(v["config"], list)
        and len(v["config"]) <= 4096
        and all(_step_ok(s) for s in v["config"])
    )


def format_ok(r: Any) -> bool:
    if not _keys(r, {"format", "evidence_code", "record", "supervision", "anchor", "judicial"}):
        return False
    if r["format"] != "wulian-receipt/1" or not _str_ok(r["evidence_code"]):
        return False
    rec = r["record"]
    if not _keys(rec, {"leaf", "index", "proof"}):
        return False
    leaf = rec["leaf"]
    if not (
        _keys(leaf, {"v", "type", "tx", "i", "c"})
        and _int_ok(leaf["v"])
        and leaf["v"] == 1
        and _str_ok(leaf["type"])
        and _hex_ok(leaf["tx"], 32)
        and _int_ok(leaf["i"])
        and _hex_ok(leaf["c"], 32)
    ):
        return False
    if not (_int_ok(rec["index"]) and _proof_ok(rec["proof"])):
        return False
    anc = r["anchor"]
    if not (
        _keys(anc, {"tx", "index", "proof"})
        and _hex_ok(anc["tx"], 32)
        and _int_ok(anc["index"])
        and _proof_ok(anc["proof"])
    ):
        return False
    return _side_ok(r["supervision"]) and _side_ok(r["judicial"])


# -- §8 verification ---------------------------------------------------------------

NAMES = (
    "format",
    "court_validators",
    "judicial_certificate",
    "anchor_inclusion",
    "supervision_validators",
    "supervision_certificate",
    "record_inclusion",
    "evidence_code",
    "commitment",
)


def _history(channel: str, genesis: list, steps: list, below: int) -> History | None:
    hist = History(channel, genesis)
    for step in steps:
        if step["header"]["h"] >= below or not hist.apply_step(step):
            return None
    return hist


def verify(
    receipt: Any,
    trust_root: dict[str, Any],
    record: bytes | None = None,
    salt: bytes | None = None,
    commitment: bytes | None = None,
) -> list[list[str]]:
    if not format_ok(receipt):
        return [["format", "fail", "malformed"]] + [[n, "skip", ""] for n in NAMES[1:]]
    out = [["format", "pass", ""]]

    def res(name: str, ok: bool, reason: str) -> None:
        out.append([name, "pass", ""] if ok else [name, "fail", reason])

    def genesis(ch: str) -> list[tuple[str, bytes]]:
        return [(v["id"], bytes.fromhex(v["pk"])) for v in trust_root[ch]]

    sup, jud = receipt["supervision"], receipt["judicial"]
    s_head, j_head = sup["header"], jud["header"]

    for ch, side, head, hname, cname in (
        ("judicial", jud, j_head, "court_validators", "judicial_certificate"),
        (None, None, None, "anchor_inclusion", None),
        ("supervision", sup, s_head, "supervision_validators", "supervision_certificate"),
    ):
        if ch is None:
            anc = receipt["anchor"]
            leaf = record_leaf("anchor", bytes.fromhex(anc["tx"]), 0, header_hash(s_head))
            res(
                hname,
                inclusion_ok(
                    leaf,
                    anc["index"],
                    j_head["rn"],
                    [bytes.fromhex(p) for p in anc["proof"]],
                    bytes.fromhex(j_head["rr"]),
                ),
                "bad_proof",
            )
            continue
        hist = _history(ch, genesis(ch), side["config"], head["h"])
        res(hname, hist is not None, "bad_config_step")
        if hist is None:
            out.append([cname, "skip", ""])
        elif head["ch"] != ch:
            out.append([cname, "fail", "wrong_channel"])
        else:
            res(
                cname,
                certifies(side["certificate"], ch, head, hist.set_at(head["h"])),
                "bad_certificate",
            )

    lf = receipt["record"]["leaf"]
    c = bytes.fromhex(lf["c"])
    leaf = record_leaf(lf["type"], bytes.fromhex(lf["tx"]), lf["i"], c)
    rec = receipt["record"]
    res(
        "record_inclusion",
        inclusion_ok(
            leaf,
            rec["index"],
            s_head["rn"],
            [bytes.fromhex(p) for p in rec["proof"]],
            bytes.fromhex(s_head["rr"]),
        ),
        "bad_proof",
    )
    res("evidence_code", receipt["evidence_code"] == evidence_code(leaf), "code_mismatch")
    if record is None and salt is None and commitment is None:
        out.append(["commitment", "skip", ""])
    elif (record is None) != (salt is None):
        out.append(["commitment", "fail", "incomplete_input"])
    elif (record is not None and salt is not None and th("record/v1", salt + record) != c) or (
        commitment is not None and commitment != c
    ):
        out.append(["commitment", "fail", "commitment_mismatch"])
    else:
        out.append(["commitment", "pass", ""])
    return out


def _hex_or_none(v: Any) -> bytes | None:
    return None if v is None else bytes.fromhex(v)


def run_vectors(directory: Path) -> int:
    failures = 0
    for path in sorted(directory.glob("*.json")):
        vec = json.loads(path.read_text(encoding="utf-8"))
        inp = vec["input"]
        got = verify(
            vec["receipt"],
            vec["trust_root"],
            _hex_or_none(inp["record"]),
            _hex_or_none(inp["salt"]),
            _hex_or_none(inp["commitment"]),
        )
        ok = got == vec["expected"]["checks"]
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {path.name}")
        if not ok:
            print("     expected", vec["expected"]["checks"], "\n     got     ", got)
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--vectors":
        return run_vectors(Path(argv[1]))
    if len(argv) not in (2, 4):
        print(__doc__, file=sys.stderr)
        return 2
    receipt = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    trust = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    record = Path(argv[2]).read_bytes() if len(argv) == 4 else None
    salt = bytes.fromhex(Path(argv[3]).read_text().strip()) if len(argv) == 4 else None
    checks = verify(receipt, trust, record, salt)
    for name, status, reason in checks:
        print(f"{status:4} {name} {reason}")
    return 0 if all(s != "fail" for _, s, _ in checks) and checks[0][1] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
