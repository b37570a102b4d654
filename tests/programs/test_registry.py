"""The TASKS registry, its lookup through fusion_dspy.task, and the language tables behind prompts."""

from __future__ import annotations

import pytest

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.programs import TASKS, arena, geofactx, mgsm, wmt
from fusion_dspy.programs._languages import (
    code_for_name,
    country_name,
    describe_language,
    is_language_code,
    language_name,
    parse_locale,
)
from fusion_dspy.task import Task, load_task


def test_registry_holds_the_four_tasks():
    assert sorted(TASKS) == ["arena", "geofactx", "mgsm", "wmt"]
    assert TASKS["mgsm"] is mgsm.TASK and TASKS["wmt"] is wmt.TASK
    assert TASKS["arena"] is arena.TASK and TASKS["geofactx"] is geofactx.TASK
    for name, task in TASKS.items():
        assert isinstance(task, Task) and task.name == name
        program = task.program()
        assert task.answer_field in program.signature.output_fields
        assert program is not task.program()  # a fresh program each time


def test_load_task_finds_registered_tasks_and_lists_them_when_unknown():
    assert load_task("mgsm") is TASKS["mgsm"]
    assert load_task("fusion_dspy.programs.wmt:TASK") is wmt.TASK
    assert load_task("fusion_dspy.programs.geofactx:make_task").name == "geofactx"
    with pytest.raises(ConfigurationError, match="arena, geofactx, mgsm, wmt"):
        load_task("nope")


def test_gold_and_vote_settings():
    assert TASKS["mgsm"].has_gold and TASKS["mgsm"].normalize is not None
    assert TASKS["geofactx"].has_gold and TASKS["geofactx"].normalize is not None
    assert TASKS["wmt"].has_gold and TASKS["wmt"].corpus_metrics is not None and TASKS["wmt"].normalize is None
    assert not TASKS["arena"].has_gold and TASKS["arena"].normalize is None


@pytest.mark.parametrize(
    ("tag", "parts"),
    [
        ("de_DE", ("de", None, "DE")),
        ("sr_Latn_RS", ("sr", "Latn", "RS")),
        ("pt-BR", ("pt", None, "BR")),
        ("zh-hant", ("zh", "Hant", None)),
        ("es_419", ("es", None, "419")),
        ("FIL", ("fil", None, None)),
    ],
)
def test_parse_locale(tag, parts):
    loc = parse_locale(tag)
    assert (loc.language, loc.script, loc.region) == parts


def test_names_fall_back_to_the_code():
    assert language_name("sw") == "Swahili" and language_name("swh") == "Swahili" and language_name("yue") == "Cantonese"
    assert language_name("qqq") == "qqq"
    assert country_name("KR") == "South Korea" and country_name("ZZ") == "ZZ" and country_name(None) is None
    assert describe_language("zh_HK") == "Chinese (Traditional)"
    assert describe_language("az_Cyrl") == "Azerbaijani (Cyrillic script)"
    assert describe_language("xx_Zzzz") == "xx (Zzzz script)"


def test_code_for_name():
    assert code_for_name("english") == "en" and code_for_name("Hindi") == "hi" and code_for_name("Kiswahili") == "sw"
    assert code_for_name("Filipino") == "fil" and code_for_name("deu") == "de" and code_for_name("ko") == "ko"
    assert code_for_name("Klingon") == "klingon"


def test_is_language_code():
    assert is_language_code("th") and is_language_code("pt_BR") and is_language_code("deu")
    assert not is_language_code("v2") and not is_language_code("question") and not is_language_code("")
