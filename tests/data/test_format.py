"""Tests for rarejax.data.format: prompts, response formatting and the never-failing parser."""
import re

import pytest
from hypothesis import given, settings, strategies as st

from rarejax.data import format as fmt
from rarejax.knowledge import grounding

RANKED = [("Marfan syndrome", "OMIM:154700"), ("Loeys-Dietz syndrome 1", "OMIM:609192"),
          ("Homocystinuria", None), ("Ehlers-Danlos syndrome, vascular type", "ORPHA:286")]
REASONING = "Tall stature, ectopia lentis and aortic root dilation.\n1. Lens: suggests MFS."
VALID = fmt.format_response(REASONING, RANKED)


def _pairs(parsed):
  return [(e.name, e.id) for e in parsed.entries]


def test_prompt_holds_note_and_task_and_ends_where_the_response_starts():
  prompt = fmt.build_prompt("  A 12-year-old boy with tall stature.\n", max_candidates=7)
  assert "Clinical note:\nA 12-year-old boy with tall stature.\n" in prompt
  assert "7 most likely" in prompt and fmt.ANSWER_OPEN in prompt and fmt.THINK_OPEN in prompt
  assert prompt.endswith(fmt.RESPONSE_HEADER)
  final = fmt.build_prompt("note", task="final")
  assert "single most likely diagnosis" in final and final != fmt.build_prompt("note")


@pytest.mark.parametrize("task", fmt.TASKS)
def test_instruction_none_drops_exactly_the_system_instruction(task):
  note = "  A 12-year-old boy with tall stature.\n"
  full = fmt.build_prompt(note, task, 7)
  bare = fmt.build_prompt(note, task, 7, instruction="none")
  assert full == fmt.build_prompt(note, task, 7, instruction="full")
  assert full.startswith(fmt.SYSTEM_INSTRUCTION) and fmt.SYSTEM_INSTRUCTION not in bare
  assert full == f"{fmt.SYSTEM_INSTRUCTION}\n\n{bare}"
  assert bare.startswith("Clinical note:\nA 12-year-old boy with tall stature.\n\nTask: ")
  assert bare.endswith(fmt.RESPONSE_HEADER)


def test_full_instruction_prompt_is_unchanged():
  assert fmt.build_prompt("A tall boy.", "differential", 3) == (
      fmt.SYSTEM_INSTRUCTION + "\n\nClinical note:\nA tall boy.\n\nTask: List the 3 most likely "
      "rare diseases, ranked from most to least likely.\n\nResponse:\n")


@pytest.mark.parametrize("kwargs, message", [
    (dict(note="n", task="ranking"), "task must be one of"),
    (dict(note="n", max_candidates=0), "max_candidates"),
    (dict(note=" \n"), "note is empty"),
    (dict(note="n", instruction="short"), r"instruction must be one of \('full', 'none'\)"),
])
def test_prompt_rejects_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    fmt.build_prompt(**kwargs)


def test_format_then_parse_round_trips():
  assert VALID.startswith(fmt.THINK_OPEN) and VALID.endswith(fmt.ANSWER_CLOSE)
  assert "\n1. Marfan syndrome (OMIM:154700)\n" in VALID and "\n3. Homocystinuria\n" in VALID
  parsed = fmt.parse_response(VALID)
  assert parsed.well_formed and parsed.problems == () and not parsed.truncated
  assert parsed.reasoning == REASONING
  assert _pairs(parsed) == RANKED
  assert [e.rank for e in parsed.entries] == [1, 2, 3, 4]
  assert parsed.entries[0].raw_line == "1. Marfan syndrome (OMIM:154700)"


@pytest.mark.parametrize("reasoning, ranked, message", [
    ("ok", [], "ranked is empty"),
    ("I think <answer>", RANKED, "inside the reasoning"),
    ("ok", [("A </answer>", None)], "inside the reasoning or a name"),
])
def test_format_response_rejects_what_would_break_the_format(reasoning, ranked, message):
  with pytest.raises(ValueError, match=message):
    fmt.format_response(reasoning, ranked)


def test_chat_template_opened_think_is_well_formed():
  parsed = fmt.parse_response(VALID[len(fmt.THINK_OPEN):])
  assert parsed.well_formed and _pairs(parsed) == RANKED


def _response(answer, reasoning="r"):
  return f"<think>{reasoning}</think>\n<answer>\n{answer}\n</answer>"


@pytest.mark.parametrize("text, pairs, problems, truncated", [
    # Line styles.
    (_response("1) Marfan syndrome - OMIM:154700\n2: ORPHA:558\n3. Homocystinuria"),
     [("Marfan syndrome", "OMIM:154700"), ("", "ORPHA:558"), ("Homocystinuria", None)], [], False),
    (_response("(1) **Marfan syndrome** (OMIM #154700): tall\n#2 OMIM:609192 Loeys-Dietz"),
     [("Marfan syndrome", "OMIM:154700"), ("Loeys-Dietz", "OMIM:609192")], [], False),
    (_response("- Marfan syndrome (OMIM:154700)\n- Homocystinuria"),
     [("Marfan syndrome", "OMIM:154700"), ("Homocystinuria", None)],
     [fmt.ENTRIES_UNNUMBERED], False),
    (_response("Marfan syndrome (OMIM:154700)"), [("Marfan syndrome", "OMIM:154700")], [], False),
    (_response("Marfan syndrome\nHomocystinuria"),
     [("Marfan syndrome", None), ("Homocystinuria", None)], [fmt.ENTRIES_UNNUMBERED], False),
    (_response("1. Marfan syndrome:\n2. Homocystinuria: less likely"),
     [("Marfan syndrome", None), ("Homocystinuria: less likely", None)], [], False),
    (_response("Differential diagnosis:\n1. Marfan syndrome\n\n2. Homocystinuria\n"),
     [("Marfan syndrome", None), ("Homocystinuria", None)], [], False),
    (_response("1. Marfan syndrome\n   supported by lens dislocation\n2. Homocystinuria"),
     [("Marfan syndrome", None), ("Homocystinuria", None)], [fmt.LINES_NOT_ENTRIES], False),
    (_response("2. Marfan syndrome\n1. Homocystinuria"),
     [("Marfan syndrome", None), ("Homocystinuria", None)], [fmt.NUMBERING_OUT_OF_ORDER], False),
    # Duplicates: same id, same name, a name repeating an id-less entry.
    (_response("1. Marfan syndrome (OMIM:154700)\n2. MFS (OMIM:154700)\n3. marfan  SYNDROME\n"
               "4. Homocystinuria\n5. Homocystinuria (OMIM:236200)"),
     [("Marfan syndrome", "OMIM:154700"), ("Homocystinuria", None)],
     [fmt.ENTRIES_DUPLICATED], False),
    (_response("1. Cataract (OMIM:116200)\n2. Cataract (OMIM:116800)"),
     [("Cataract", "OMIM:116200"), ("Cataract", "OMIM:116800")], [], False),
    # Tags missing, repeated, misplaced.
    ("<think>r</think>\nMy answer:\n1. Marfan syndrome\n2. Homocystinuria",
     [("Marfan syndrome", None), ("Homocystinuria", None)], [fmt.ANSWER_MISSING], False),
    ("1. Tall stature\n\nSo the differential:\n1. Marfan syndrome\nthen\n2. Homocystinuria",
     [("Marfan syndrome", None), ("Homocystinuria", None)], [fmt.ANSWER_MISSING], False),
    ("<think>1. Marfan syndrome</think>", [], [fmt.ANSWER_MISSING], False),
    ("<think>r</think><answer>1. A</answer>\n<answer>1. B</answer>", [("B", None)],
     [fmt.ANSWER_REPEATED], False),
    ("<answer>1. A</answer>", [("A", None)], [fmt.THINK_UNCLOSED], False),
    ("<think>r<answer>1. A</answer>", [("A", None)], [fmt.THINK_UNCLOSED], False),
    ("<think>r</think><think>s</think><answer>1. A</answer>", [("A", None)],
     [fmt.THINK_REPEATED, fmt.TEXT_OUTSIDE_SECTIONS], False),
    ("<think>r</think><answer>1. A</think></answer>", [("A", None)],
     [fmt.TAG_MISPLACED, fmt.THINK_REPEATED], False),
    ("hello <think>r</think><answer>1. A</answer> bye", [("A", None)],
     [fmt.TEXT_OUTSIDE_SECTIONS], False),
    ("<think>r</think><answer>\n\n</answer>", [], [fmt.ANSWER_EMPTY], False),
    # Truncation.
    ("<think>long reasoning 1. Marfan syndrome", [], [fmt.THINK_UNCLOSED], True),
    ("<think>r</think><answer>\n1. Marfan syndrome (OMIM:154700)\n2. Homocyst",
     [("Marfan syndrome", "OMIM:154700")], [fmt.ANSWER_UNCLOSED], True),
    ("<think>r</think><answer>\n1. Marfan syndrome (OMIM:154700)\n2. Loeys (ORPHA:6003",
     [("Marfan syndrome", "OMIM:154700")], [fmt.ANSWER_UNCLOSED], True),
    ("<think>r</think><answer>\n1. Marfan syndrome (OMIM:154700)",
     [("Marfan syndrome", "OMIM:154700")], [fmt.ANSWER_UNCLOSED], True),
    # Garbage.
    ("", [], [fmt.ANSWER_MISSING], False),
    ("\x00\ufffd<<<>>>", [], [fmt.ANSWER_MISSING], False),
    (None, [], [fmt.ANSWER_MISSING], False),
    (b"<think>r</think><answer>1. A\xff</answer>", [("A\ufffd", None)], [], False),
])
def test_parse_malformed_outputs(text, pairs, problems, truncated):
  parsed = fmt.parse_response(text)
  assert _pairs(parsed) == pairs
  assert sorted(parsed.problems) == sorted(problems)
  assert parsed.truncated == truncated
  assert parsed.well_formed == (not problems)
  assert [e.rank for e in parsed.entries] == list(range(1, len(pairs) + 1))


def test_cut_at_every_position_gives_a_prefix_of_the_entries():
  for cut in range(len(VALID)):
    parsed = fmt.parse_response(VALID[:cut])
    assert not parsed.well_formed
    assert _pairs(parsed) == RANKED[:len(parsed.entries)], VALID[:cut]
    assert parsed.truncated or fmt.ANSWER_MISSING in parsed.problems, VALID[:cut]
    if cut > len(fmt.THINK_OPEN):
      assert REASONING.startswith(parsed.reasoning) or parsed.reasoning.startswith(REASONING)
  # Cut right after a complete line, the line counts.
  assert len(fmt.parse_response(VALID[:VALID.index("(OMIM:609192)") + 13]).entries) == 2


def test_huge_inputs_are_capped():
  many = "\n".join(f"{i}. Disease {i} (ORPHA:{i})" for i in range(1, 5001))
  parsed = fmt.parse_response(_response(many, reasoning="x" * 1_000_000))
  assert len(parsed.entries) == fmt.MAX_ENTRIES and fmt.TOO_MANY_ENTRIES in parsed.problems
  assert parsed.entries[-1].id == f"ORPHA:{fmt.MAX_ENTRIES}"
  long_line = fmt.parse_response(_response("1. " + "a" * 2_000_000))
  assert len(long_line.entries[0].name) <= fmt.MAX_LINE_CHARS
  assert len(fmt.parse_response("1. A\n" * 200_000).entries) == 1


_FRAGMENTS = st.sampled_from([
    "<think>", "</think>", "<answer>", "</answer>", "\n", " ", "1. ", "2) ", "(3) ", "- ", "* ",
    "#4 ", "Marfan syndrome", "MFS", " (OMIM:154700)", "OMIM #154700", "ORPHA:558", "Orphanet_",
    "MONDO:0007947", " - ", ": ", "**", "(", ")", "[", ";", "type II", "é", "\r\n", "\t", "#",
    "%", "123456", "<think", "answer>", "OMIM:", "\x00"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(_FRAGMENTS, max_size=60).map("".join)))
def test_parser_never_raises_and_keeps_its_invariants(text):
  parsed = fmt.parse_response(text)
  assert parsed.well_formed == (not parsed.problems)
  assert [e.rank for e in parsed.entries] == list(range(1, len(parsed.entries) + 1))
  assert len(parsed.entries) <= fmt.MAX_ENTRIES
  ids = [e.id for e in parsed.entries if e.id is not None]
  assert len(ids) == len(set(ids))
  assert all(re.fullmatch(r"(OMIM|ORPHA|MONDO|DECIPHER):\d+", i) for i in ids)
  assert all(e.name or e.id for e in parsed.entries)
  assert all("\n" not in e.name for e in parsed.entries)


def test_every_knowledge_base_name_round_trips(kb):
  diseases = sorted(kb.diseases.values(), key=lambda d: d.id)
  changed = []
  for i in range(0, len(diseases), 10):
    ranked = [(d.name, d.id) for d in diseases[i:i + 10]]
    parsed = fmt.parse_response(fmt.format_response("r", ranked))
    assert parsed.well_formed, parsed.problems
    assert [e.id for e in parsed.entries] == [d for _, d in ranked]
    assert [grounding.normalize(e.name) for e in parsed.entries] == [
        grounding.normalize(n) for n, _ in ranked]
    changed += [e.name for e, (name, _) in zip(parsed.entries, ranked)
                if e.name != " ".join(name.split())]
  assert len(changed) < 10, changed  # only edge punctuation ('... type mut-') may be lost


def test_id_only_entries_round_trip():
  text = fmt.format_response("", [("", "OMIM:154700"), ("", "ORPHA:558")])
  assert "1. OMIM:154700\n2. ORPHA:558" in text
  parsed = fmt.parse_response(text)
  assert parsed.well_formed
  assert [(e.name, e.id) for e in parsed.entries] == [("", "OMIM:154700"), ("", "ORPHA:558")]
  with pytest.raises(ValueError, match="needs a name or an id"):
    fmt.format_entry(1, " ", None)
