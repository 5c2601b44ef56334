"""Data tests on ../shared/data (skip when absent): the whole phenopacket-store dev zip and case texts."""
import collections
import time

import pytest

from tests import conftest
from rarejax import cases

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def dev_cases(kb_with_sources):
  path = conftest.shared_path("phenopacket-store", "phenopacket-store-dev.zip")
  start = time.perf_counter()
  read, report = cases.read_phenopackets(path, kb_with_sources)
  seconds = time.perf_counter() - start
  print(f"\nread {report.n_read} phenopackets in {seconds:.2f} s "
        f"({1e3 * seconds / max(1, report.n_read):.2f} ms each)\n{report.summary()}")
  return read, report


def test_dev_zip_counts(dev_cases):
  read, report = dev_cases
  assert report.n_read + report.n_skipped == 8389
  assert report.n_read >= 8380 and report.n_skipped <= 9, report.examples
  publications = cases.pmids(read)
  diseases = {g for c in read for g in c.gold_ids}
  print(f"{len(publications)} publications, {len(diseases)} diseases, "
        f"{sum(len(c.observed) for c in read) / len(read):.1f} observed and "
        f"{sum(len(c.excluded) for c in read) / len(read):.1f} excluded terms per case, "
        f"sex {dict(collections.Counter(c.sex for c in read))}, "
        f"{sum(c.age is not None for c in read)} with age, "
        f"{sum(c.onset is not None for c in read)} with onset")
  assert len(publications) == 1420 and len(diseases) == 705
  assert all(c.pmid and c.gold_ids and c.observed for c in read)
  assert len({c.id for c in read}) == len(read)
  assert sum(report.hpo_dropped.values()) < 0.005 * sum(len(c.observed) for c in read)


def test_dev_cases_render_without_leaks(dev_cases, kb_with_sources):
  read, _ = dev_cases
  sample = read[::8]
  start = time.perf_counter()
  rendered = cases.render_cases(sample, kb_with_sources, seed=0)
  seconds = time.perf_counter() - start
  print(f"rendered {len(rendered)} notes in {seconds:.2f} s")
  for case in rendered:
    assert case.note and not cases.leaks(case.note, cases.forbidden_names(case, kb_with_sources))


def test_dev_split_by_publication(dev_cases):
  read, _ = dev_cases
  split = cases.split_by_publication(read, validation_fraction=0.2, seed=0)
  val = cases.pmids(c for c in split if c.split == "validation")
  train = cases.pmids(c for c in split if c.split == "train")
  assert not set(val) & set(train) and len(val) + len(train) == 1420
  assert 0.15 < len(val) / 1420 < 0.25


def test_case_texts_read():
  read, report = cases.read_text_cases(conftest.shared_path("case-texts", "dev"))
  assert report.n_skipped == 0 and report.n_read == len(read) == 53  # 48 files, 4 with several
  assert all(c.note and c.pmid and c.gold_ids[0].startswith("OMIM:") for c in read)
  assert len(cases.pmids(read)) == 48
