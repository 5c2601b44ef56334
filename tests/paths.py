"""The paths the tests share, computed once from this file's place: the repository root and the
folders under it (tests in subfolders import these instead of counting parents of __file__)."""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
GIN_CONFIGS = ROOT / "gin_configs"
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"
