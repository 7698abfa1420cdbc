"""Text cleaning: HTML, mojibake, the `¿` losses, whitespace and case."""

from __future__ import annotations

import re
from pathlib import Path

import ftfy
import pandas as pd
import pytest

from src.features.text import (
    clean_text,
    clean_texts,
    combine_texts,
    contains_html,
    contains_mojibake,
    repair_inverted_question_marks,
    unescape,
)


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("<p>Lampe <b>LED</b></p><br />Blanc", "lampe led blanc"),
        ("Caract&eacute;ristiques&nbsp;: l&#39;&eacute;t&eacute;", "caractéristiques : l'été"),
        ("Double &amp;eacute;chappement", "double échappement"),
        ("&lt;span&gt;balise échappée&lt;/span&gt;", "balise échappée"),
        ("a < b et c > d", "a < b et c > d"),
        ("<!-- commentaire -->Texte", "texte"),
        ("CrÃ©Ã©e Ã  Paris", "créée à paris"),
        ("Qualité Â· Accueil", "qualité · accueil"),
        ("l\u2019été \u201cchaud\u201d", 'l\'été "chaud"'),  # curly quotes
        ("\ufb01ne \uff34\uff45\uff53\uff54", "fine test"),  # ligature, fullwidth
        ("  Trop\u00a0 d'espaces\n\tici  ", "trop d'espaces ici"),
        ("mettre en ¿uvre", "mettre en œuvre"),
        ("L'intégrale Des ¿Uvres", "l'intégrale des œuvres"),
        ("base d¿alimentation, l¿échelle, s¿y", "base d'alimentation, l'échelle, s'y"),
        ("qualit¿¿ supérieure", "qualit¿¿ supérieure"),
    ],
)
def test_clean_text(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned


def test_case_is_kept_when_asked() -> None:
    assert clean_text("Mettre en ¿Uvre <b>LED</b>", lowercase=False) == "Mettre en ŒUvre LED"


def test_ftfy_cannot_undo_the_inverted_question_mark_so_the_project_repairs_it() -> None:
    # The source replaced the lost character by `¿`: no byte is left for ftfy to decode.
    assert ftfy.fix_text("mettre en ¿uvre") == "mettre en ¿uvre"
    assert repair_inverted_question_marks("mettre en ¿uvre") == "mettre en œuvre"


def test_repair_leaves_ambiguous_losses() -> None:
    text = "Cà¿tés, dâ¿¿hygiène, ¿¿crire"
    assert repair_inverted_question_marks(text) == text


def test_unescape_twice_only_where_escaped_twice() -> None:
    assert unescape("&amp;eacute;") == "é"
    assert unescape("AT&amp;T") == "AT&T"
    assert unescape("sans entité") == "sans entité"


def test_missing_texts_become_empty_and_index_is_kept() -> None:
    texts = pd.Series(["<b>Un</b>", None, float("nan")], index=[7, 8, 9], dtype=object)
    cleaned = clean_texts(texts)
    assert cleaned.tolist() == ["un", "", ""]
    assert cleaned.index.tolist() == [7, 8, 9]


def test_a_column_is_cleaned_as_each_text_alone() -> None:
    texts = pd.Series(["CrÃ©e &amp; <i>Cie</i>", "¿uvre", "Simple"])
    assert clean_texts(texts).tolist() == [clean_text(text) for text in texts]


def test_combine_texts_separates_with_one_space() -> None:
    designation = pd.Series(["lampe", "table"])
    description = pd.Series(["led blanche", ""])
    assert combine_texts(designation, description).tolist() == ["lampe led blanche", "table"]


def test_contains_html_and_mojibake() -> None:
    texts = pd.Series(["<br>", "&amp;", "a < b", "CrÃ©e", "d¿une", None, "Crée"])
    assert contains_html(texts).tolist() == [True, True, False, False, False, False, False]
    assert contains_mojibake(texts).tolist() == [False, False, False, True, True, False, False]


def _reference(text: str) -> str:
    """The slow cleaning: ftfy on every text, no vectorised steps."""
    text = ftfy.fix_text(unescape(text), unescape_html=False)
    text = re.sub(r"<!--.*?-->|</?[a-zA-Z][^<>]*>", " ", text, flags=re.DOTALL)
    return " ".join(repair_inverted_question_marks(text).split()).lower()


def test_fast_path_matches_ftfy_on_every_text_on_real_rows(rakuten_sample: Path) -> None:
    x = pd.read_csv(rakuten_sample / "X_train_update.csv", index_col=0)
    for column in ("designation", "description"):
        texts = x[column]
        assert clean_texts(texts).tolist() == texts.fillna("").map(_reference).tolist()


def test_real_mojibake_is_repaired(rakuten_sample: Path) -> None:
    x = pd.read_csv(rakuten_sample / "X_train_update.csv", index_col=0)
    text = " ".join(clean_texts(x["description"]))
    assert "¿uvre" not in text and "mettre en œuvre" in text
    assert "â·" not in text.lower() and "&#39;" not in text and "<br" not in text
