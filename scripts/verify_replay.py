#!/usr/bin/env python3
"""Checks a Relais replay file (NDJSON) without Relais: the chain links and the signed
checkpoints (docs/AUDIT.md, "Re-implementing the check"). Needs `cryptography`.

    python3 scripts/verify_replay.py replay.ndjson <public key, base64>

It does not decode the stored events (postcard): `relais verify --file` also checks that each
event line shows what its stored bytes hold. Nor does it look for lines missing from a sequence
range, check the end line's counts or message lines' members; lines not chained yet are skipped.
"""
import base64, hashlib, json, struct, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def link(prev: bytes, seq: int, subject: str, payload: bytes) -> bytes:
    return hashlib.sha256(b"relais-chain-v1" + prev + struct.pack(">Q", seq) + b"\x01"
                          + hashlib.sha256(subject.encode()).digest()
                          + hashlib.sha256(payload).digest()).digest()


def verify(path: str, public_key_b64: str) -> str:
    raw_key = base64.b64decode(public_key_b64)
    key, key_id = Ed25519PublicKey.from_public_bytes(raw_key), hashlib.sha256(raw_key).hexdigest()[:16]
    last_seq, last_link, signed, count = None, None, None, 0
    for text in open(path, encoding="utf-8"):
        line = json.loads(text)
        kind = line["relaiskind"]
        if kind in ("event", "message") and line["relaislink"] is not None:
            seq, prev = line["sequence"], bytes.fromhex(line["relaisprev"])
            mine = link(prev, seq, line["relaissubject"], base64.b64decode(line["relaispayload"]))
            if mine.hex() != line["relaislink"]:
                sys.exit(f"altered at sequence {seq}")
            if last_seq is not None and seq <= last_seq:
                sys.exit(f"reordered at sequence {seq}")
            if last_seq == seq - 1 and last_link != prev:
                sys.exit(f"the chain breaks between sequences {seq - 1} and {seq}")
            last_seq, last_link, count = seq, mine, count + 1
        elif kind == "checkpoint":
            _, stream, seq, head, signed_at, kid = line["statement"].split(" ")
            if kid != key_id:
                sys.exit(f"checkpoint at sequence {seq}: signed by key {kid}, not {key_id}")
            key.verify(base64.b64decode(line["signature"]), line["statement"].encode())  # raises if forged
            if int(seq) == last_seq and head != last_link.hex():
                sys.exit(f"checkpoint at sequence {seq}: the signed head differs from the chain")
            signed = int(seq) if int(seq) == last_seq else signed
    return f"{count} links verified, head at sequence {last_seq}, last signed checkpoint at sequence {signed}"


if __name__ == "__main__":
    print(verify(sys.argv[1], sys.argv[2]))
