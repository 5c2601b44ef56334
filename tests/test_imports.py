"""No import cycle among the modules of rarejax/ (read with `ast`, nothing is imported).

Every import of a rarejax module counts, at module level or inside a function: a function-level
import is still a dependency, only a deferred one. `from rarejax.x import y` depends on
rarejax.x.y when that is a module and on rarejax.x otherwise; a package (its __init__.py) is a
node of its own, so `import rarejax.x.y` depends on rarejax.x.y, not on the package rarejax.x.
"""
from __future__ import annotations

import ast
import pathlib

from tests import paths

ROOT = paths.ROOT / "rarejax"


def module_files(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
  """Module name → file, for every .py file under `root` (a package's name is its folder's)."""
  out = {}
  for path in sorted(root.rglob("*.py")):
    parts = path.relative_to(root.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _resolve(name: str, modules: set[str]) -> str | None:
  """`name`, or its longest prefix that is a module; None outside the package."""
  parts = name.split(".")
  while parts:
    candidate = ".".join(parts)
    if candidate in modules:
      return candidate
    parts.pop()
  return None


def imports_of(module: str, path: pathlib.Path, modules: set[str]) -> set[str]:
  """The package's modules (`modules`) that `module` imports anywhere in its file."""
  top = module.split(".")[0]
  is_package = path.name == "__init__.py"
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(_resolve(alias.name, modules) for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: from the module's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
      if base != top and not base.startswith(top + "."):
        continue
      for alias in node.names:
        submodule = f"{base}.{alias.name}"
        found.add(submodule if submodule in modules else _resolve(base, modules))
  found.discard(None)
  return found


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
  files = module_files(root)
  return {m: imports_of(m, p, set(files)) for m, p in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module, and modules importing themselves
  (Tarjan's algorithm, iterative)."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []
  counter = 0
  for start in sorted(graph):
    if start in index:
      continue
    work = [(start, iter(sorted(graph[start])))]
    index[start] = low[start] = counter
    counter += 1
    stack.append(start)
    on_stack.add(start)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = counter
          counter += 1
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph[child]))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1 or node in graph[node]:
          out.append(sorted(component))
  return sorted(out)


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
  members = set(component)
  edges = [f"    {m} -> {d}" for m in component for d in sorted(graph[m] & members)]
  return f"  {{{', '.join(component)}}}:\n" + "\n".join(edges)


def test_graph_sees_every_kind_of_import(tmp_path):
  files = {
      "__init__.py": "",
      "a.py": "import json\nfrom pkg import b\nimport pkg.sub.c\n",
      "b.py": "def f():\n  from pkg.sub import d, CONSTANT\n",
      "sub/__init__.py": "from pkg.sub.c import X\nCONSTANT = 1\n",
      "sub/c.py": "from . import d\nfrom .. import a\nX = 1\n",
      "sub/d.py": "from ..b import f\nimport pkg\n",
      "e.py": "class E:\n  def m(self):\n    from pkg.sub.c import X\n",
  }
  for name, text in files.items():
    (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pkg" / name).write_text(text)
  assert import_graph(tmp_path / "pkg") == {
      "pkg": set(),
      "pkg.a": {"pkg.b", "pkg.sub.c"},           # module level; no edge to the package pkg.sub
      "pkg.b": {"pkg.sub.d", "pkg.sub"},         # in a function; a name of the package pkg.sub
      "pkg.sub": {"pkg.sub.c"},                  # a package's __init__ importing its submodule
      "pkg.sub.c": {"pkg.sub.d", "pkg.a"},       # relative imports
      "pkg.sub.d": {"pkg.b", "pkg"},
      "pkg.e": {"pkg.sub.c"},                    # in a method
  }
  assert cycles(import_graph(tmp_path / "pkg")) == [
      ["pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c", "pkg.sub.d"]]


def test_cycles_are_found():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}, "f": set()}
  assert cycles(graph) == [["a", "b", "c"], ["d"]]


def test_no_import_cycle_in_rarejax():
  graph = import_graph()
  assert len(graph) > 50, sorted(graph)
  found = cycles(graph)
  assert not found, "import cycles in rarejax/ (each with its edges):\n" + "\n".join(
      _describe(c, graph) for c in found)


# Who may not import whom: the rankers are core library code that data/ and evaluate/ both use,
# so they import neither; data/ builds datasets and never imports the evaluation.
FORBIDDEN = {
    "rarejax.phenotypes": ("rarejax.data", "rarejax.evaluate", "rarejax.rers", "rarejax.rl",
                           "rarejax.train", "rarejax.stages", "rarejax.experiment"),
    "rarejax.data": ("rarejax.evaluate", "rarejax.rers", "rarejax.rl", "rarejax.stages"),
}


def _within(module: str, package: str) -> bool:
  return module == package or module.startswith(package + ".")


def test_packages_import_only_downward():
  graph = import_graph()
  wrong = [f"{m} -> {d}" for m, deps in sorted(graph.items()) for d in sorted(deps)
           for package, banned in FORBIDDEN.items()
           if _within(m, package) and any(_within(d, b) for b in banned)]
  assert not wrong, "imports against the layering (FORBIDDEN):\n  " + "\n  ".join(wrong)
