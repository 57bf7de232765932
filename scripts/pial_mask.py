#!/usr/bin/env python3
"""The cerebrum of pycortex's subject S1 as a mask, for scripts/real_anatomy.sh:

    python3 scripts/pial_mask.py pycortex-1.4.0.tar.gz OUT.nii.gz

Standard library only: the benchmark needs no numpy."""
import base64, collections, gzip, pathlib, re, struct, sys, tarfile, zlib

def gifti_points(text):
    """Vertex coordinates (mm) of a GIFTI surface's first data array."""
    array = re.search(r'<DataArray(.*?)>.*?<Data>(.*?)</Data>', text, re.S)
    head, data = array.group(1), array.group(2)
    if 'NIFTI_TYPE_FLOAT32' not in head or 'GZipBase64Binary' not in head:
        sys.exit("real_anatomy.sh: unexpected GIFTI encoding in pycortex's pial surface")
    raw = zlib.decompress(base64.b64decode(data))
    v = struct.unpack(f'<{len(raw) // 4}f', raw)
    return list(zip(v[0::3], v[1::3], v[2::3]))

def write_mask_nifti(path, mask, shape, origin, h):
    """An axis-aligned RAS uint8 NIfTI-1 (.nii.gz) of `mask` (x fastest)."""
    hdr = bytearray(352)
    struct.pack_into('<i', hdr, 0, 348)
    struct.pack_into('<8h', hdr, 40, 3, *shape, 1, 1, 1, 1)
    struct.pack_into('<hh', hdr, 70, 2, 8)  # uint8, 8 bits
    struct.pack_into('<8f', hdr, 76, 1.0, h, h, h, 1, 1, 1, 1)
    struct.pack_into('<fff', hdr, 108, 352.0, 1.0, 0.0)
    hdr[123] = 2  # mm
    struct.pack_into('<hh', hdr, 252, 0, 2)  # sform: aligned
    for r in range(3):
        row = [0.0, 0.0, 0.0, origin[r]]
        row[r] = h
        struct.pack_into('<4f', hdr, 280 + 16 * r, *row)
    hdr[344:348] = b'n+1\0'
    with gzip.open(path, 'wb') as f:
        f.write(bytes(hdr) + bytes(mask))

def pial_mask(sdist, out):
    """The cerebrum of pycortex's subject S1: inside its pial surfaces
    (both hemispheres, in the raw T1's world coordinates), on a 2 mm grid."""
    tar = tarfile.open(sdist)
    points = []
    for hemi in ('lh', 'rh'):
        member = f'pycortex-1.4.0/filestore/db/S1/surfaces/pia_{hemi}.gii'
        points += gifti_points(tar.extractfile(member).read().decode())
    h = 2.0
    lo = [min(p[a] for p in points) - 3 * h for a in range(3)]
    hi = [max(p[a] for p in points) + 3 * h for a in range(3)]
    shape = [int((hi[a] - lo[a]) / h) + 1 for a in range(3)]
    nx, ny, nz = shape
    shell = bytearray(nx * ny * nz)
    for p in points:
        i, j, k = (int(round((p[a] - lo[a]) / h)) for a in range(3))
        shell[i + nx * (j + ny * k)] = 1
    # One voxel of dilation seals the shell where the surface only grazes a voxel.
    steps = (1, -1, nx, -nx, nx * ny, -nx * ny)
    sealed = bytearray(shell)
    for idx in (i for i, s in enumerate(shell) if s):
        for d in steps:
            if 0 <= idx + d < len(sealed):
                sealed[idx + d] = 1
    # Flood the outside from a corner (the grid's border is outside the brain).
    outside = bytearray(len(sealed))
    queue = collections.deque([0])
    outside[0] = 1
    while queue:
        idx = queue.popleft()
        i, j, k = idx % nx, (idx // nx) % ny, idx // (nx * ny)
        for d, ok in zip(steps, (i < nx - 1, i > 0, j < ny - 1, j > 0, k < nz - 1, k > 0)):
            n = idx + d
            if ok and not outside[n] and not sealed[n]:
                outside[n] = 1
                queue.append(n)
    mask = bytes(1 - o for o in outside)
    ml = sum(mask) * h ** 3 / 1000
    if not 800 <= ml <= 1800:
        sys.exit(f"real_anatomy.sh: pycortex's pial surfaces enclose {ml:.0f} ml, not a cerebrum")
    write_mask_nifti(out, mask, shape, lo, h)
    print(f"{'pycortex_s1':20s} cerebrum inside its pial surfaces, {ml:.0f} ml")

pial_mask(sys.argv[1], sys.argv[2])
