#!/usr/bin/env python3
"""mkseeds.py: derive tiny valid GGUF files from a real llama.cpp file, as
fuzzing seeds (tests/fuzz_seeds/gguf/) and to look at by hand.

    python3 tests/hostile/mkseeds.py ../shared/testdata/llamacpp/stories260K-Q2_K.gguf tests/fuzz_seeds/gguf

Its own minimal GGUF parser/serialiser (independent of harness/model/gguf.c):
keeps every non-tokenizer KV, cuts the tokenizer arrays to 4 entries, keeps
a few tensors with shapes cut to one block row (real bytes), and writes the
canonical layout llama.cpp writes (alignment 32, zero padding).  Each output
is under 2 KB.  The hostile corpus itself is generated in tests/test_gguf.c.
"""
import struct
import sys

SCALAR = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: 'B', 10: 'Q', 11: 'q', 12: 'd'}
BLOCK = {0: (1, 4), 1: (1, 2), 8: (32, 34), 20: (32, 18), 6: (32, 22)}  # type: (elems, bytes)


def parse(b):
    o = 0

    def rd(fmt):
        nonlocal o
        v = struct.unpack_from('<' + fmt, b, o)[0]
        o += struct.calcsize('<' + fmt)
        return v

    def rstr():
        nonlocal o
        n = rd('Q')
        s = b[o:o + n]
        o += n
        return s

    def val(t):
        if t == 8:
            return rstr()
        if t == 9:
            et, n = rd('I'), rd('Q')
            return (et, [val(et) for _ in range(n)])
        return rd(SCALAR[t])

    assert b[:4] == b'GGUF'
    o = 4
    ver, nt, nkv = rd('I'), rd('Q'), rd('Q')
    kvs = []
    for _ in range(nkv):
        k = rstr()
        t = rd('I')
        kvs.append((k, t, val(t)))
    infos = []
    for _ in range(nt):
        name = rstr()
        nd = rd('I')
        ne = [rd('Q') for _ in range(nd)]
        infos.append((name, ne, rd('I'), rd('Q')))
    data = (o + 31) // 32 * 32
    return ver, kvs, infos, data


def ser(ver, kvs, tensors, align=32):
    out = bytearray(b'GGUF' + struct.pack('<IQQ', ver, len(tensors), len(kvs)))

    def wstr(s):
        out.extend(struct.pack('<Q', len(s)) + s)

    def wval(t, v):
        if t == 8:
            wstr(v)
        elif t == 9:
            et, items = v
            out.extend(struct.pack('<IQ', et, len(items)))
            for x in items:
                wval(et, x)
        else:
            out.extend(struct.pack('<' + SCALAR[t], v))

    for k, t, v in kvs:
        wstr(k)
        out.extend(struct.pack('<I', t))
        wval(t, v)
    off = 0
    for name, ne, ty, blob in tensors:
        wstr(name)
        out.extend(struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', x) for x in ne))
        out.extend(struct.pack('<IQ', ty, off))
        off += (len(blob) + align - 1) // align * align
    if tensors:
        out.extend(b'\0' * (-len(out) % align))
        for *_, blob in tensors:
            out.extend(blob + b'\0' * (-len(blob) % align))
    return bytes(out)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    b = open(src, 'rb').read()
    ver, kvs, infos, data = parse(b)
    small = []
    for k, t, v in kvs:
        if t == 9 and k.startswith(b'tokenizer.'):
            v = (v[0], v[1][:4])
        small.append((k, t, v))
    tensors, seen = [], set()
    for name, ne, ty, off in infos:
        if ty not in BLOCK or ty in seen:
            continue
        seen.add(ty)
        be, bb = BLOCK[ty]
        ne2 = [be * max(1, min(ne[0], 64) // be)] + [1] * (len(ne) - 1)
        nb = ne2[0] // be * bb
        tensors.append((name, ne2, ty, b[data + off:data + off + nb]))
    seeds = {
        'small-model.gguf': ser(ver, small, tensors),
        'small-v2-align64.gguf': ser(2, small[:3] + [(b'general.alignment', 4, 64)], tensors[:2], 64),
        'vocab-only.gguf': ser(ver, [kv for kv in small if kv[0].startswith(b'tokenizer.')], []),
        'nested.gguf': ser(3, [(b'n', 9, (9, [(5, [1, -2]), (8, [b'x', b'']), (9, [(7, [1, 0])])])),
                               (b'b', 7, 1), (b'f', 12, 0.5), (b'i', 11, -3)], tensors[:1]),
    }
    for fn, blob in seeds.items():
        open(f'{dst}/{fn}', 'wb').write(blob)
        print(f'{dst}/{fn}: {len(blob)} bytes')


if __name__ == '__main__':
    main()
