"""Draft API-reference entries for modules of esper_core, from their code and docstrings.

``python scripts/api_entries.py stages alpha ...`` prints one ``## `esper_core.<module>``` section
per module in the format of ``docs/api.md``: every name of the module's ``__all__`` with its
signature (or value) and the first sentence of its docstring, and for classes their public
methods and properties. The output is a draft: the prose in docs/api.md is edited by hand.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import re
import sys


def markdown(text: str) -> str:
    """reStructuredText roles and literals as Markdown code spans."""
    text = re.sub(r":\w+:`~?([\w.]+?)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    text = re.sub(r":\w+:`([^`<]*?) <[^>]+>`", lambda m: f"`{m.group(1)}`", text)
    return text.replace("``", "`")


def first_sentence(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return markdown(" ".join(doc.split("\n\n")[0].split()))


def signature(obj: object) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    sig = re.sub(r"<(\w+)\.(\w+): [^>]*>", r"\1.\2", sig)  # enum defaults as Name.MEMBER
    return sig.replace("'", "")


def entry(name: str, obj: object, comment: str = "") -> list[str]:
    if inspect.isclass(obj) and issubclass(obj, enum.Enum):
        members = ", ".join(f"`{m.name}` ({m.value!r})" for m in obj)
        return [f"- **`{name}`** — enum: {members}. {first_sentence(obj)}"]
    if inspect.isclass(obj):
        sig = signature(obj).removesuffix(" -> None")
        lines = [f"- **`{name}`**`{sig}` — {first_sentence(obj)}"]
        for attr, value in sorted(vars(obj).items()):
            if attr.startswith("_"):
                continue
            if isinstance(value, property):
                lines.append(f"  - `.{attr}` — {first_sentence(value)}")
            elif inspect.isfunction(value) or isinstance(value, classmethod | staticmethod):
                fn = value.__func__ if isinstance(value, classmethod | staticmethod) else value
                sig = signature(fn).replace("(self, ", "(").replace("(self)", "()").replace("(cls, ", "(")
                sig = sig.removesuffix(" -> None")
                lines.append(f"  - `.{attr}{sig}` — {first_sentence(fn)}")
        return lines
    if callable(obj):
        return [f"- **`{name}`**`{signature(obj)}` — {first_sentence(obj)}"]
    shown = repr(obj)
    if len(shown) > 60:
        return [f"- **`{name}`** — {comment}"]
    return [f"- **`{name}`** `= {shown}` — {comment}"]


def constant_comments(module: object) -> dict[str, str]:
    """``#:`` comments written above module-level assignments (Sphinx's convention)."""
    try:
        lines = inspect.getsource(module).splitlines()
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    for i, line in enumerate(lines):
        name = line.split(":")[0].split("=")[0].strip()
        if name.isidentifier() and i and lines[i - 1].startswith("#:"):
            j, text = i - 1, []
            while j >= 0 and lines[j].startswith("#:"):
                text.insert(0, lines[j][2:].strip())
                j -= 1
            found[name] = markdown(" ".join(text))
    return found


def section(module_name: str) -> str:
    module = importlib.import_module(f"esper_core.{module_name}")
    comments = constant_comments(module)
    lines = [f"## `esper_core.{module_name}`", "", first_sentence(module), ""]
    for name in module.__all__:
        lines.extend(entry(name, getattr(module, name), comments.get(name, "")))
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(section(m) for m in sys.argv[1:]))
