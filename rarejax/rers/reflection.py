"""The reflection turn of RERS: "that answer is wrong" plus knowledge of the gold disease.

A failed trajectory is continued from the teacher's own KV cache (Sampler.resume; nothing is
read twice) with a turn such as

  Feedback: the answer above is wrong; Noonan syndrome 1 (OMIM:163950) is not the diagnosis.
  Reference knowledge about Marfan syndrome (OMIM:154700):
  Supporting findings: ectopia lentis (very frequent, 80–99%); ... Arguing against it: ...
  Inheritance of Marfan syndrome: autosomal dominant inheritance.
  Onset of ... / the Orphanet definition                          (when the knowledge has them)
  Unlike Marfan syndrome, Noonan syndrome 1 typically shows webbed neck and ptosis.
  Reconsider the clinical note and write a new response.

  Response:

after which the teacher writes a fresh <think>…</think><answer>…</answer>. The knowledge lines
are the knowledge corpus's own answers (rarejax.data.corpus: disease_support,
disease_inheritance, disease_onset, disease_definition), so the feedback teaches nothing the
knowledge stage did not. The contrast line names frequent findings of the top wrong candidate
that are not annotated for the gold disease. Later rounds say the revised answer is still wrong
and contrast the new top wrong candidate. `FEEDBACK_PHRASES` is the wording of these turns that a
kept response must never repeat (rarejax.rers.filters).
"""
from __future__ import annotations

from typing import Sequence

from rarejax import knowledge
from rarejax.data import corpus
from rarejax.data import format as format_lib
from rarejax.evaluate import grader as grader_lib

KNOWLEDGE_KINDS = ("disease_support", "disease_inheritance", "disease_onset",
                   "disease_definition")
# Phrases of the feedback turns (and the usual ways of citing them) that betray a second turn.
FEEDBACK_PHRASES = ("feedback", "hint", "reference knowledge", "answer above", "response above",
                    "previous answer", "previous response", "revised answer", "new response",
                    "is wrong", "was wrong", "still wrong", "i was told", "as provided",
                    "knowledge provided", "given knowledge")
MAX_CONTRAST_FINDINGS = 5


def gold_knowledge(kb: knowledge.KnowledgeBase, disease_id: str) -> list[str]:
  """The corpus's answers about a disease's findings, inheritance, onset and definition
  ([] when the knowledge base does not know the disease)."""
  if disease_id not in kb.diseases:
    return []
  examples = corpus.disease_examples(kb, disease_id, findings_questions=0)
  return [ex["answer"] for ex in examples if ex["kind"] in KNOWLEDGE_KINDS]


def top_wrong_candidate(grade: grader_lib.GradeResult,
                        kb: knowledge.KnowledgeBase) -> knowledge.Disease | None:
  """The best-ranked answer entry that grounds to a known disease and is not the gold one."""
  for entry in grade.ranked:
    if entry.rank != grade.gold_rank and entry.id in kb.diseases:
      return kb.diseases[entry.id]
  return None


def contrast_line(kb: knowledge.KnowledgeBase, gold_id: str, gold_name: str,
                  wrong: knowledge.Disease, n: int = MAX_CONTRAST_FINDINGS) -> str:
  """'Unlike G, W typically shows a and b.': W's most frequent findings not annotated for G
  ('' when there are none)."""
  gold = kb.diseases.get(gold_id)
  shared = set() if gold is None else {f.hpo_id for f in corpus.findings(kb, gold)}
  own = [corpus.lower_first(f.name) for f in corpus.findings(kb, wrong)
         if f.frequency != 0.0 and f.hpo_id not in shared][:n]
  if not own:
    return ""
  return f"Unlike {gold_name}, {wrong.name} typically shows {corpus.join_words(own)}."


def reflection_turn(kb: knowledge.KnowledgeBase, gold_id: str, gold_name: str,
                    wrong: knowledge.Disease | None, round_index: int,
                    contrast: bool = True) -> str:
  """The text appended after a failed response in reflection round `round_index` (1-based).

  Round 1 gives the knowledge of the gold disease; later rounds refer back to it. `wrong` is the
  failed answer's top wrong candidate (`top_wrong_candidate`), named and contrasted when known.
  The text ends with the response header, where the teacher starts its new response.
  """
  if round_index < 1:
    raise ValueError(f"round_index is 1-based, got {round_index}")
  verdict = "the answer above is wrong" if round_index == 1 else \
      "the revised answer is still wrong"
  if wrong is not None:
    verdict += f"; {wrong.name} ({wrong.id}) is not the diagnosis"
  lines = [f"Feedback: {verdict}."]
  if round_index == 1:
    facts = gold_knowledge(kb, gold_id) or ["No further knowledge is recorded."]
    lines += [f"Reference knowledge about {gold_name} ({gold_id}):", *facts]
  if contrast and wrong is not None:
    lines.append(contrast_line(kb, gold_id, gold_name, wrong))
  lines.append("Reconsider the clinical note and write a new response." if round_index == 1 else
               "Reconsider the reference knowledge above and the clinical note and write a new "
               "response.")
  body = "\n".join(line for line in lines if line)
  return f"\n\n{body}\n\n{format_lib.RESPONSE_HEADER}"


def disease_names(kb: knowledge.KnowledgeBase, disease_ids: Sequence[str]) -> list[str]:
  """Names and synonyms of the given diseases (unknown ids are skipped)."""
  names = []
  for disease_id in disease_ids:
    disease = kb.diseases.get(disease_id)
    if disease is not None:
      names += [disease.name, *disease.synonyms]
  return names


def turn_terms(kb: knowledge.KnowledgeBase, disease_ids: Sequence[str]) -> list[str]:
  """Every term a turn about these diseases may list: their names and synonyms and the names of
  their findings (present and absent), onsets and inheritance modes."""
  terms = disease_names(kb, disease_ids)
  for disease_id in disease_ids:
    disease = kb.diseases.get(disease_id)
    if disease is not None:
      found = corpus.findings(kb, disease)
      terms += [f.name for f in found] + corpus.absent_findings(kb, disease, found)
      terms += corpus.term_names(kb, (*disease.onsets, *disease.inheritance))
  return terms
