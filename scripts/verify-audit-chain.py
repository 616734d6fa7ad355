#!/usr/bin/env python3
"""Verify an Errand audit export (errand audit export --format jsonl) with
nothing but Python's standard library: an auditor's check that does not
trust Errand's own code. docs/audit-chain.md defines what it checks.

    python3 scripts/verify-audit-chain.py audit.jsonl [--anchor SEQ:HASH ...]

Every line is an event; its hash must be SHA-256 of the previous event's
hash (64 zeros before the first), a newline, and the event's canonical form:
for hash_scheme 2, the RFC 8785 (JCS) form of the line's object without
"hash"; for hash_scheme 1 (events written before JCS; also a line without
hash_scheme), the line's own member texts, as Go's encoder wrote them, in
the old fixed order. A chain never goes back from scheme 2 to 1.
Exit 0 if the chain holds, 1 naming the first broken seq, 2 on bad usage.
"""
import hashlib
import json
import sys

GENESIS = "0" * 64


def jcs_number(x):
    """ECMAScript's Number::toString of a double, as RFC 8785 requires."""
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")  # shortest round trip
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    n = len(whole) + int(exp or 0) - (len(whole + frac) - len(digits))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        s = digits + "0" * (n - k)
    elif 0 < n <= 21:
        s = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * -n + digits
    else:
        e = n - 1
        s = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e > 0 else "-") + str(abs(e))
    return sign + s


def jcs(v):
    """RFC 8785 canonical form of a parsed JSON value."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return jcs_number(float(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # escapes only " \ and controls, as JCS
    if isinstance(v, list):
        return "[" + ",".join(jcs(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-16-be"))  # UTF-16 code unit order
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(v[k]) for k in keys) + "}"
    raise ValueError("not a JSON value")


OLD_ORDER = ("seq", "time", "type", "actor", "task_id", "detail")


def old_canon(line):
    """Scheme 1: the line's member texts (the export writes them as Go's
    encoder wrote them into the hash) in the old order, without hash_scheme."""
    dec, s, raw, i = json.JSONDecoder(), line.strip(), {}, 1
    while s[i] != "}":
        k, i = dec.raw_decode(s, i)
        if s[i] != ":":
            raise ValueError("not compact JSON")
        _, j = dec.raw_decode(s, i + 1)
        raw[k], i = s[i + 1:j], j + (s[j] == ",")
    if set(raw) - {"hash", "hash_scheme"} != set(OLD_ORDER):
        raise ValueError("not an event's members")
    return "{" + ",".join('"%s":%s' % (k, raw[k]) for k in OLD_ORDER) + "}"


def no_duplicates(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member")
    return obj


def main(argv):
    args, anchors = argv[1:], {}
    path = None
    while args:
        a = args.pop(0)
        if a == "--anchor" and args:
            seq, _, h = args.pop(0).partition(":")
            anchors[int(seq)] = h
        elif path is None:
            path = a
        else:
            print(__doc__, file=sys.stderr)
            return 2
    if path is None:
        print(__doc__, file=sys.stderr)
        return 2
    prev, want_seq, last_scheme, old = GENESIS, 1, 0, 0

    def broken(seq, why):
        print("audit chain broken at seq %d: %s" % (seq, why))
        return 1

    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                ev = json.loads(line, object_pairs_hook=no_duplicates)
                got, seq = ev.pop("hash"), ev["seq"]
                if type(seq) is not int:
                    raise ValueError("seq is not an integer")
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                return broken(want_seq, "line is not an exported event: %s" % e)
            if seq != want_seq:
                return broken(min(seq, want_seq), "expected seq %d, found %d" % (want_seq, seq))
            scheme = ev.get("hash_scheme", 1)
            if scheme not in (1, 2) or type(scheme) is not int or scheme < last_scheme:
                return broken(seq, "hash_scheme %r after %d" % (scheme, last_scheme))
            try:
                canon = jcs(ev) if scheme == 2 else old_canon(line)
            except (ValueError, IndexError) as e:
                return broken(seq, "not canonicalisable: %s" % e)
            if hashlib.sha256((prev + "\n" + canon).encode("utf-8")).hexdigest() != got:
                return broken(seq, "content or order does not match its hash")
            old += scheme == 1
            if seq in anchors and anchors[seq] != got:
                return broken(seq, "the anchor says hash %s, the chain has %s" % (anchors[seq], got))
            prev, want_seq, last_scheme = got, want_seq + 1, scheme
    for seq in anchors:
        if seq >= want_seq:
            return broken(seq, "the chain ends at seq %d, before the anchor" % (want_seq - 1))
    print("audit chain intact: %d events (%d of scheme 1), head seq %d, hash %s" % (want_seq - 1, old, want_seq - 1, prev))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
