"""ECDSA P-256 / SHA-256 in plain Python, to sign SendGrid-style webhook requests in
scripts/api-fuzz without a crypto package in the fuzzer's virtualenv. For fuzzing only: it is
neither constant-time nor hardened, and its keys sign nothing but test requests.

    python p256.py public-key HEX   base64 DER SubjectPublicKeyInfo of the private scalar HEX
"""

import base64
import hashlib
import secrets
import sys

P = 2**256 - 2**224 + 2**192 + 2**96 - 1
A = P - 3
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)
# SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (65 bytes) }
SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")


def _add(p, q):
    if p is None:
        return q
    if q is None:
        return p
    if p[0] == q[0] and (p[1] + q[1]) % P == 0:
        return None
    if p == q:
        lam = (3 * p[0] * p[0] + A) * pow(2 * p[1], -1, P) % P
    else:
        lam = (q[1] - p[1]) * pow(q[0] - p[0], -1, P) % P
    x = (lam * lam - p[0] - q[0]) % P
    return x, (lam * (p[0] - x) - p[1]) % P


def _mul(k, point):
    result = None
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def scalar(hex_key):
    """The private scalar of a hex string (reduced into [1, N-1])."""
    return int(hex_key, 16) % (N - 1) + 1


def public_key(d):
    """base64 of the DER SubjectPublicKeyInfo, as SendGrid shows its verification key."""
    x, y = _mul(d, G)
    point = b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")
    return base64.b64encode(SPKI_PREFIX + point).decode()


def _der_int(v):
    b = v.to_bytes((v.bit_length() + 7) // 8 or 1, "big")
    if b[0] & 0x80:
        b = b"\x00" + b
    return b"\x02" + bytes([len(b)]) + b


def sign(d, message):
    """base64 of the DER ECDSA signature of `message` (bytes) with SHA-256."""
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    while True:
        k = secrets.randbelow(N - 1) + 1
        r = _mul(k, G)[0] % N
        s = pow(k, -1, N) * (e + r * d) % N
        if r and s:
            break
    body = _der_int(r) + _der_int(s)
    return base64.b64encode(b"\x30" + bytes([len(body)]) + body).decode()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "public-key":
        print(public_key(scalar(sys.argv[2])))
    else:
        sys.exit(__doc__)
