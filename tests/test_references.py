"""``book/references.bib`` holds every work the book cites, and the works behind its material.

- Every key of a ``{cite}``, ``{cite:p}``, ``{cite:t}`` (any ``{cite:...}`` role) in the markdown of
  ``book/*.ipynb`` and in ``book/*.md`` is an entry of the bibliography (the website build would only
  warn about the first missing key per page; this test lists them all, per chapter).
- No key is defined twice (several people append to the file), and every entry has an author (or
  editor), a title, a year and a venue.
- The works issue #12 asks for (VAE, AVB, GAN, f-GAN, WGAN, WGAN-GP, AAE, WAE, Cramér GAN,
  Gumbel-softmax twice, Balog et al., Salimans et al., FID, IWAE, PixelCNN, PixelVAE, two flows papers,
  Flow-GAN, InfoGAN, β-VAE, InfoVAE, multimodal VAE, VRNN, AdaGAN, precision/recall) are entries,
  found by first author, year and title (not by key, so any key naming them will do).
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import nbformat
import pytest
from pybtex.database import parse_file

ROOT = Path(__file__).resolve().parent.parent
BIB = ROOT / "book" / "references.bib"
PAGES = sorted((ROOT / "book").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md"))
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")
VENUE_FIELDS = {"journal", "booktitle", "publisher", "howpublished", "school", "institution", "eprint", "url"}

# (what, first author's last name, accepted years (arXiv and venue), a regular expression for the title)
REQUIRED = [
    ("VAE", "Kingma", {2013, 2014}, r"auto-encoding variational bayes"),
    ("AVB", "Mescheder", {2017}, r"adversarial variational bayes"),
    ("GAN", "Goodfellow", {2014}, r"generative adversarial net"),
    ("f-GAN", "Nowozin", {2016}, r"f-gan"),
    ("WGAN", "Arjovsky", {2017}, r"^wasserstein generative adversarial networks"),
    ("WGAN-GP", "Gulrajani", {2017}, r"improved training of wasserstein gans"),
    ("AAE", "Makhzani", {2015, 2016}, r"adversarial autoencoders"),
    ("WAE", "Tolstikhin", {2017, 2018}, r"wasserstein auto-?encoders"),
    ("Cramér GAN", "Bellemare", {2017}, r"cramer distance"),
    ("Gumbel-softmax (Jang et al.)", "Jang", {2016, 2017}, r"gumbel-softmax"),
    ("Concrete (Maddison et al.)", "Maddison", {2016, 2017}, r"concrete distribution"),
    ("Balog et al.", "Balog", {2017}, r"gumbel trick"),
    ("Salimans et al.", "Salimans", {2016}, r"improved techniques for training gans"),
    ("FID", "Heusel", {2017}, r"two time-scale update rule"),
    ("IWAE", "Burda", {2015, 2016}, r"importance weighted autoencoders"),
    ("PixelCNN", "van den Oord", {2016}, r"pixel recurrent neural networks|pixelcnn"),
    ("PixelVAE", "Gulrajani", {2016, 2017}, r"pixelvae"),
    ("Flows (Rezende & Mohamed)", "Rezende", {2015}, r"variational inference with normalizing flows"),
    ("Flows (Kingma et al., IAF)", "Kingma", {2016}, r"inverse autoregressive flow"),
    ("Flow-GAN", "Grover", {2017, 2018}, r"flow-gan"),
    ("InfoGAN", "Chen", {2016}, r"infogan"),
    ("β-VAE", "Higgins", {2017}, r"beta-vae|β-vae"),
    ("InfoVAE", "Zhao", {2017, 2019}, r"infovae"),
    ("Multimodal VAE", "Wu", {2018}, r"multimodal generative models"),
    ("VRNN", "Chung", {2015}, r"recurrent latent variable model"),
    ("AdaGAN", "Tolstikhin", {2017}, r"adagan"),
    ("Precision/recall", "Kynkaanniemi", {2019}, r"precision and recall"),
]


def plain(latex: str) -> str:
    """Lower-case ASCII text of a BibTeX string: accents and braces dropped (Kynk{\\"a}{\\"a}nniemi -> kynkaanniemi)."""
    s = re.sub(r"\\[\"'`^~=.uvHckr]\s*", "", latex)
    s = s.replace("{", "").replace("}", "").replace("\\", "")
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return re.sub(r"\s+", " ", s).strip().lower()


def _entries():
    return parse_file(str(BIB), bib_format="bibtex").entries


def cited_keys(text: str) -> list[str]:
    return [k.strip() for group in CITE.findall(text) for k in group.split(",") if k.strip()]


def _page_text(path: Path) -> str:
    if path.suffix == ".md":
        return path.read_text()
    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_cite_roles_are_read_with_every_key():
    text = "see {cite}`a,b` and {cite:p}`c, d` or {cite:t}`e`; {cite:ps}`f`; not `g` nor {ref}`h`"
    assert cited_keys(text) == ["a", "b", "c", "d", "e", "f"]
    assert plain(r"Kynk{\"a}{\"a}nniemi") == "kynkaanniemi" and plain(r"Sz{\'e}kely") == "szekely"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_every_cited_key_is_in_the_bibliography(path):
    keys = set(_entries())
    missing = sorted(set(cited_keys(_page_text(path))) - keys)
    assert not missing, f"{path.name} cites keys that book/references.bib lacks: {missing}"


def test_no_key_is_defined_twice():
    keys = re.findall(r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", BIB.read_text(), re.M)
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert not duplicates, f"keys defined more than once in references.bib: {duplicates}"


def test_every_entry_has_author_title_year_and_venue():
    bad = []
    for key, e in _entries().items():
        fields = {f.lower() for f in e.fields}
        has_people = bool(e.persons.get("author") or e.persons.get("editor"))
        if not (has_people and "title" in fields and re.fullmatch(r"\d{4}", e.fields.get("year", "")) and
                fields & VENUE_FIELDS):
            bad.append(key)
    assert not bad, f"entries without author/title/year/venue: {bad}"


@pytest.mark.parametrize("what, author, years, title", REQUIRED, ids=[r[0] for r in REQUIRED])
def test_required_work_is_in_the_bibliography(what, author, years, title):
    found = []
    for key, e in _entries().items():
        people = e.persons.get("author") or []
        if not people:
            continue
        first = plain(" ".join(people[0].prelast_names + people[0].last_names))
        if first == plain(author) and int(e.fields.get("year", 0)) in years and re.search(
                title, plain(e.fields.get("title", ""))):
            found.append(key)
    assert found, f"{what}: no entry by {author} et al. ({sorted(years)}) with a title matching {title!r}"
