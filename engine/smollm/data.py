"""Text for distilling and evaluating the SmolLM2 draft, all from this machine (nothing downloaded):
Python standard-library source, English documentation (/usr/share/doc, man pages), and chat
prompts built from templates x topics (the target answers them itself). Every item is assigned
to "train" or "heldout" by a hash of its name, so the split is stable across runs and machines.
"""
import gzip
import hashlib
import re
import sysconfig
from pathlib import Path


def split_of(name: str, heldout_frac: float = 0.1) -> str:
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") / 2**64
    return "heldout" if h < heldout_frac else "train"


def _read(path: Path, limit: int) -> str:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", errors="replace") as f:
                return f.read(limit)
        return path.read_text(errors="replace")[:limit]
    except OSError:
        return ""


def stdlib_code(limit_chars: int = 20000):
    """(name, text) for the standard library's .py files (tests and vendored code skipped)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(("test/", "idlelib/idle_test", "lib2to3/tests", "site-packages/")) or "/test" in rel:
            continue
        text = _read(p, limit_chars)
        if len(text) > 500:
            yield "code:" + rel, text


_ROFF = re.compile(r"\\f[BIRP0-9]|\\f\(..|\\\(..|\\[&e]|\\s[-+]?\d")


def man_text(raw: str) -> str:
    """Crude roff -> text: drop requests/comments, keep text lines, strip font escapes."""
    out = []
    for line in raw.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith("."):
            parts = line.split(None, 1)
            if parts[0] in (".SH", ".SS", ".B", ".I", ".BR", ".IR", ".RB", ".BI", ".IP", ".TP") and len(parts) > 1:
                out.append(parts[1].replace('"', ""))
            continue
        out.append(line)
    text = _ROFF.sub("", "\n".join(out)).replace("\\-", "-").replace("\\\\", "\\")
    return re.sub(r"\n{3,}", "\n\n", text)


def english_docs(limit_chars: int = 20000):
    """(name, text) for English docs: /usr/share/doc text/markdown and man sections 1, 3, 5, 7, 8."""
    doc = Path("/usr/share/doc")
    for p in sorted(doc.rglob("*")):
        name = p.name.lower()
        if not p.is_file() or "changelog" in name or "copyright" in name or "relnotes" in p.as_posix().lower():
            continue
        if p.suffix in (".txt", ".md", ".rst") or (p.suffix == ".gz" and p.stem.endswith((".txt", ".md"))) \
                or name in ("readme", "readme.gz", "news.gz"):
            text = _read(p, limit_chars)
            if len(text) > 800 and text.isascii():
                yield "doc:" + p.relative_to(doc).as_posix(), text
    man = Path("/usr/share/man")
    for sec in ("man1", "man3", "man5", "man7", "man8"):
        for p in sorted((man / sec).glob("*.gz")):
            if p.name.startswith("gcloud") and not p.name.startswith("gcloud_compute"):
                continue                                # thousands of near-identical pages
            text = man_text(_read(p, limit_chars))
            if len(text) > 800 and text.isascii():
                yield f"man:{sec}/{p.name}", text


TOPICS = """photosynthesis; black holes; the water cycle; climate change; vaccines; the immune system;
plate tectonics; volcanoes; the French Revolution; the Roman Empire; the printing press; the
industrial revolution; democracy; inflation; supply and demand; compound interest; budgeting;
machine learning; neural networks; the internet; encryption; passwords; cloud computing; databases;
recursion; sorting algorithms; binary search; hash tables; linked lists; version control with git;
unit testing; Python decorators; Python generators; list comprehensions; exceptions in Python;
object-oriented programming; functional programming; the Linux command line; regular expressions;
HTTP; DNS; operating systems; memory management; multithreading; electric cars; solar power;
wind energy; nuclear fission; gravity; the speed of light; magnets; the human heart; sleep;
healthy eating; exercise; meditation; stress; time management; public speaking; writing an essay;
learning a language; reading habits; chess; football; the Olympic Games; music theory; the guitar;
painting; photography; cooking pasta; baking bread; coffee; tea; gardening; composting; recycling;
dogs; cats; bees; whales; dinosaurs; the Moon; Mars; the Sun; stars; galaxies; the Great Wall of
China; the pyramids of Egypt; Shakespeare; poetry; novels; job interviews; resumes; teamwork;
leadership; negotiation; saving money; renting an apartment; travelling on a budget; maps; rivers;
deserts; rainforests; oceans; earthquakes; hurricanes; the periodic table; atoms; DNA; evolution;
bacteria; viruses; antibiotics; probability; statistics; prime numbers; fractions; geometry;
calculus; the Pythagorean theorem; spreadsheets; email etiquette; social media; online privacy;
smartphones; batteries; 3D printing; robots; bicycles; trains; airplanes; bridges; skyscrapers""".replace("\n", " ")

TEMPLATES = ["Explain {t} in simple terms.", "What is {t}?", "Give me three interesting facts about {t}.",
             "Write a short paragraph about {t}.", "Why is {t} important?", "How would you teach {t} to a child?",
             "What are common misconceptions about {t}?", "Summarize the key ideas of {t} in a few sentences.",
             "Write a short poem about {t}.", "What are the pros and cons of {t}?",
             "Give me some tips related to {t}.", "Describe the history of {t} briefly."]

CODE_TASKS = """reverses a string; checks whether a number is prime; computes the factorial of n; returns the
n-th Fibonacci number; counts the words in a text; removes duplicates from a list; merges two sorted
lists; finds the maximum of a list without max(); checks if a string is a palindrome; flattens a
nested list; reads a CSV file and prints each row; computes the average of a list of numbers;
converts Celsius to Fahrenheit; sorts a dictionary by value; finds the most common element in a
list; validates an email address with a regular expression; computes the greatest common divisor;
implements binary search; implements bubble sort; counts vowels in a string; returns the squares of
even numbers in a list; checks whether two strings are anagrams; generates a random password;
transposes a matrix; computes the sum of digits of an integer""".replace("\n", " ")


def chat_prompts():
    """(name, user message) pairs; split by topic/task so held-out prompts share no topic."""
    topics = [t.strip() for t in TOPICS.split(";") if t.strip()]
    tasks = [t.strip() for t in CODE_TASKS.split(";") if t.strip()]
    out = []
    for i, t in enumerate(topics):
        for j, tpl in enumerate(TEMPLATES):
            if (i + j) % 4 == 0:                        # a quarter of the grid, spread over both axes
                out.append(("topic:" + t, tpl.format(t=t)))
    for i, task in enumerate(tasks):
        for j, tpl in enumerate(["Write a Python function that {t}.", "How do I write Python code that {t}?"]):
            out.append(("task:" + task, tpl.format(t=task)))
    return out


def chat_prompts_full():
    """Every template x topic pair (plus the coding tasks): 4x chat_prompts(), same names, so the
    same topics are held out; for more chat-style training text."""
    topics = [t.strip() for t in TOPICS.split(";") if t.strip()]
    tasks = [t.strip() for t in CODE_TASKS.split(";") if t.strip()]
    out = [("topic:" + t, tpl.format(t=t)) for t in topics for tpl in TEMPLATES]
    out += [("task:" + task, tpl.format(t=task)) for task in tasks
            for tpl in ["Write a Python function that {t}.", "How do I write Python code that {t}?"]]
    return out


def chunks(texts, tokenizer, length: int, stride: int | None = None):
    """Token windows [length] over each text (tokenised without special tokens)."""
    stride = stride or length
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for s in range(0, max(len(ids) - length // 4, 1), stride):
            w = ids[s:s + length]
            if len(w) >= length // 4:
                yield w
