"""The playground page in a real Chromium against `make run`: the registry, Decide's chart, Send's
answer, errors, a 360 px window, the keyboard alone, the API key, a stage prefix, and the usage view.

Where the page shows what the service answered, the test asks the service the same over plain HTTP
(urllib) and compares. The drawing rules are also fed directly (free models, the usage view, whose
endpoint this service does not have yet).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from playwright.sync_api import Page, Request, Route

from tests.browser.conftest import Playground, api, api_error
from tests.payloads import HAIKU_REQUEST

# The seed's haiku request as the form takes it: the built-in registry chooses mock:advanced
# (mock:premium is removed by the latency limit, mock:basic and mock:standard are below the floor).
HAIKU_FORM = {
    "input": "Write a haiku about the sea.",
    "max_cost_usd": "0.002",
    "min_quality": "3",
    "max_latency_ms": "1000",
    "prefer_provider": "mock",
    "task_type": "summarization",
    "expected_output_tokens": "128",
}
DRY_RUN = {**HAIKU_REQUEST, "dry_run": True}
# Every focusable control, in tab order (the usage tab is hidden while GET usage answers 404).
TAB_ORDER = ["api-key", "input", "min_quality", "max_cost_usd", "max_latency_ms", "prefer_provider",
             "strict_budget", "strict_quality", "task_type", "expected_output_tokens", "decide", "send"]
API_KEY = "pg-test-key-0123456789"


def is_route_call(request: Request) -> bool:
    """A call of POST route (wherever the page lives)."""
    return request.method == "POST" and urlsplit(request.url).path.endswith("/route")


def decide(tab: Playground) -> Any:
    """Press Decide; the body the page sent, once the chart is drawn."""
    with tab.page.expect_request(is_route_call) as sent:
        tab.page.locator("#decide").click()
    tab.page.locator("#chart .chosen").wait_for()
    return sent.value.post_data_json


def centre_x(page: Page, selector: str) -> float:
    """The horizontal centre of an element on screen."""
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box["x"] + box["width"] / 2


def test_the_page_loads_with_no_console_errors(playground: Playground) -> None:
    playground.open()
    playground.page.wait_for_load_state("networkidle")
    assert playground.page.title() == "Costroute playground"
    assert playground.unexpected_console_errors() == []
    # GET usage answers 404 here: no usage tab, and no tab list at all for the one view.
    assert playground.page.locator("#tab-usage").is_hidden()
    assert playground.page.locator("[role=tablist]").is_hidden()
    playground.screenshot("loaded")


def test_the_registry_table_lists_the_models_of_get_models(playground: Playground) -> None:
    models = api(playground.base, "models")["models"]
    playground.open()
    rows = playground.page.locator("#registry-rows tr")
    assert rows.evaluate_all("rows => rows.map(row => row.dataset.model)") == [m["id"] for m in models]
    for model in models:
        cells = playground.page.locator(f'#registry-rows tr[data-model="{model["id"]}"] > *').all_inner_texts()
        assert cells[0] == model["id"]
        assert cells[1].startswith(model["provider"])
        assert cells[2] == str(model["quality"])
        assert cells[5] == f"{model['latency_ms']:,} ms"
        assert cells[7] == ("yes" if model["available"] else model["unavailable_reason"])
    # The provider choices are the registry's own, after "none".
    options = playground.page.locator("#prefer_provider option").all_inner_texts()
    assert options == ["none", *dict.fromkeys(m["provider"] for m in models)]


def test_decide_draws_one_mark_per_candidate_and_highlights_the_models_choice(playground: Playground) -> None:
    playground.open()
    playground.fill(HAIKU_FORM)
    sent = decide(playground)
    assert sent == DRY_RUN, "the form's fields, and nothing for the empty ones"
    expected = api(playground.base, "route", DRY_RUN)
    page = playground.page
    marks = page.locator("#chart [data-model]").evaluate_all("marks => marks.map(mark => mark.dataset.model)")
    assert sorted(marks) == sorted(c["model"] for c in expected["candidates"])
    assert len(marks) == len(set(marks)) == expected["candidates_total"]
    assert page.locator("#chart .chosen").get_attribute("data-model") == expected["model"] == "mock:advanced"
    assert page.locator("#rung").inner_text() == expected["rung"]["description"]
    assert page.locator("#trace li").all_inner_texts() == expected["decision_trace"]
    # The chart has a name, and the list of candidates says in words what it draws.
    assert page.locator("#chart").get_attribute("role") == "img"
    assert page.get_by_role("img", name="Candidates: estimated cost (log scale) against quality").count() == 1
    listed = page.locator("#candidate-list li").evaluate_all("items => items.map(item => item.dataset.model)")
    assert listed == [c["model"] for c in expected["candidates"]]
    assert page.locator("#answer").is_hidden()
    assert playground.unexpected_console_errors() == []
    playground.screenshot("decided")


def test_the_budget_line_parts_the_marks_cheaper_than_the_budget_from_the_dearer(playground: Playground) -> None:
    playground.open()
    playground.fill(HAIKU_FORM)
    decide(playground)
    budget = float(HAIKU_FORM["max_cost_usd"])
    line = centre_x(playground.page, "#chart line.budget")
    candidates = api(playground.base, "route", DRY_RUN)["candidates"]
    below = {c["model"] for c in candidates if c["estimated_cost_usd"] < budget}
    above = {c["model"] for c in candidates if c["estimated_cost_usd"] > budget}
    assert below == {"mock:basic", "mock:standard", "mock:advanced"} and above == {"mock:premium"}
    for model in below:
        assert centre_x(playground.page, f'#chart [data-model="{model}"]') < line, model
    for model in above:
        assert centre_x(playground.page, f'#chart [data-model="{model}"]') > line, model
    # And the log scale keeps the order of the costs.
    by_cost = sorted(candidates, key=lambda c: c["estimated_cost_usd"])
    xs = [centre_x(playground.page, f'#chart [data-model="{c["model"]}"]') for c in by_cost]
    assert xs == sorted(xs)


def test_models_removed_by_the_latency_limit_are_hollow_and_listed_with_their_reason(playground: Playground) -> None:
    playground.open()
    playground.fill(HAIKU_FORM)
    decide(playground)
    page = playground.page
    candidates = {c["model"]: c for c in api(playground.base, "route", DRY_RUN)["candidates"]}
    reason = candidates["mock:premium"]["reason"]
    assert reason == "estimated latency 1500 ms > limit 1000 ms"
    premium = page.locator('#chart [data-model="mock:premium"]')
    assert "hollow" in (premium.get_attribute("class") or "").split()
    assert premium.evaluate("mark => getComputedStyle(mark).fill") == "none"
    assert reason in (premium.locator("title").text_content() or "")
    # The ladder's own exclusions (below the quality floor) stay filled.
    for model in ("mock:basic", "mock:standard", "mock:advanced"):
        mark = page.locator(f'#chart [data-model="{model}"]')
        assert "hollow" not in (mark.get_attribute("class") or "").split(), model
        assert mark.evaluate("mark => getComputedStyle(mark).fill") != "none", model
    assert page.locator("#removed-list li").all_inner_texts() == [f"mock:premium: {reason}"]


def test_the_removal_rule_reads_the_reasons_the_service_writes(playground: Playground) -> None:
    """Latency and availability reasons are hollow; the ladder's quality and budget verdicts are not."""
    playground.open()
    removed = [
        "estimated latency 1500 ms > limit 1000 ms",
        "not available",
        "no API key for provider 'openai': the environment variable OPENAI_API_KEY is not set",
        "no API key is configured for provider 'openai' (set OPENAI_API_KEY or OPENAI_API_KEY_SECRET_ID)",
        "circuit open after 3 consecutive failures; trial in 12.5 s",
        "not routed to: a real provider is configured (an OpenAI key), so the built-in mock models answer only when pinned by id",
        "not in the pool",
    ]
    ranked = [
        "quality 1 < required 3",
        "estimated $0.00398 > budget $0.002",
        "quality 2 < required 3; estimated $0.0031 > budget $0.002",
        "no rung could use it",
    ]
    verdicts = playground.page.evaluate(
        "reasons => reasons.map(reason => window.costroutePlayground.isRemoved({verdict: 'excluded', reason}))",
        removed + ranked,
    )
    assert verdicts == [True] * len(removed) + [False] * len(ranked)
    assert playground.page.evaluate("window.costroutePlayground.isRemoved({verdict: 'eligible', reason: 'x'})") is False


def test_free_models_sit_in_a_zero_column_at_the_left_edge(playground: Playground) -> None:
    """Zero has no place on a log scale: free models get the $0 column left of every priced one."""
    playground.open()
    candidates = [
        {"model": "local:free", "quality": 2, "estimated_cost_usd": 0, "estimated_latency_ms": 10, "verdict": "eligible", "reason": "x"},
        {"model": "mock:basic", "quality": 1, "estimated_cost_usd": 2.7e-05, "estimated_latency_ms": 150, "verdict": "excluded", "reason": "quality 1 < required 3"},
        {"model": "mock:advanced", "quality": 4, "estimated_cost_usd": 0.000803, "estimated_latency_ms": 500, "verdict": "chosen", "reason": "chosen on rung 1"},
    ]
    page = playground.page
    page.evaluate("document.getElementById('decision').hidden = false")
    page.evaluate("([c, budget]) => window.costroutePlayground.drawCandidates(document.getElementById('chart'), c, budget)",
                  [candidates, 0.002])
    free = centre_x(page, '#chart [data-model="local:free"]')
    assert free < centre_x(page, '#chart [data-model="mock:basic"]') < centre_x(page, "#chart line.budget")
    zero_label = page.evaluate("""() => {
        const label = [...document.querySelectorAll('#chart .axes text')].find(text => text.textContent === '$0');
        const box = label.getBoundingClientRect();
        return box.x + box.width / 2;
    }""")
    assert abs(zero_label - free) < 2


def test_send_shows_the_answer_and_the_actual_cost_against_the_estimate(playground: Playground) -> None:
    playground.open()
    playground.fill(HAIKU_FORM)
    page = playground.page
    with page.expect_request(is_route_call) as sent:
        page.locator("#send").click()
    page.locator("#answer").wait_for()
    assert sent.value.post_data_json == HAIKU_REQUEST, "Send is the real call: no dry_run"
    expected = api(playground.base, "route", HAIKU_REQUEST)
    assert page.locator("#response").inner_text() == expected["response"] == "[MOCK:advanced] Echo: Write a haiku about the sea."
    assert float(page.locator("#actual-cost").get_attribute("data-usd") or "nan") == expected["actual_cost_usd"]
    assert float(page.locator("#estimated-cost").get_attribute("data-usd") or "nan") == expected["estimate"]["cost_usd"]
    assert page.locator("#actual-cost").inner_text() == "$0.000113"
    assert page.locator("#estimated-cost").inner_text() == "$0.000803"
    usage = expected["usage"]
    assert page.locator("#usage").inner_text().startswith(
        f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion = {usage['total_tokens']} tokens")
    attempts = page.locator("#attempts tr th").all_inner_texts()
    assert attempts == [a["model"] for a in expected["attempts"]] == ["mock:advanced"]
    assert page.locator("#failovers").inner_text() == "none"
    # The real call's decision is drawn too.
    assert page.locator("#chart .chosen").get_attribute("data-model") == expected["model"]
    assert playground.unexpected_console_errors() == []
    playground.screenshot("sent")


def test_a_call_in_flight_shows_a_loading_state(playground: Playground) -> None:
    playground.open()
    playground.fill(HAIKU_FORM)
    page = playground.page
    held: list[Route] = []
    page.route(lambda url: urlsplit(url).path == "/route", lambda route: held.append(route))
    page.locator("#decide").click()
    page.get_by_role("status").filter(has_text="Deciding…").wait_for()
    assert len(held) == 1
    assert page.locator("#decide").get_attribute("aria-disabled") == "true"
    assert page.locator("#results").get_attribute("aria-busy") == "true"
    page.keyboard.press("Enter")  # on the focused Decide again: ignored while busy, no second call
    held[0].continue_()
    page.locator("#chart .chosen").wait_for()
    assert len(held) == 1
    assert page.locator("#decide").get_attribute("aria-disabled") == "false"
    assert page.locator("#results").get_attribute("aria-busy") == "false"
    assert page.get_by_role("status").inner_text() == "Decided: mock:advanced."


@pytest.mark.parametrize(
    ("form", "param"),
    [
        ({**HAIKU_FORM, "min_quality": "9"}, "min_quality"),
        ({**HAIKU_FORM, "input": ""}, "input"),
        ({**HAIKU_FORM, "max_cost_usd": "-1"}, "max_cost_usd"),
    ],
    ids=["min_quality_9", "no_input", "negative_budget"],
)
def test_a_400_shows_the_services_message(playground: Playground, form: dict[str, str], param: str) -> None:
    playground.open()
    playground.fill(form)
    page = playground.page
    with page.expect_request(is_route_call) as sent:
        page.locator("#decide").click()
    alert = page.get_by_role("alert")
    alert.locator(".error-message").wait_for()
    body = sent.value.post_data_json
    assert isinstance(body, dict)
    status, error = api_error(playground.base, "route", body)
    assert status == 400
    assert alert.locator(".error-message").inner_text() == error["message"]
    assert page.locator(f"#{param}").get_attribute("aria-invalid") == "true"
    assert page.locator("#decision").is_hidden()
    playground.screenshot(f"error-{param}")


def test_nothing_overflows_a_360_px_window(open_tab: Callable[[int], Playground]) -> None:
    tab = open_tab(360)
    tab.open()
    page = tab.page
    width = "document.documentElement.scrollWidth"
    assert page.evaluate(width) <= 360
    tab.fill(HAIKU_FORM)
    decide(tab)
    assert page.evaluate(width) <= 360
    page.locator("#send").click()
    page.locator("#answer").wait_for()
    assert page.evaluate(width) <= 360
    # The chart is drawn at the width it has, not squeezed from a wider one.
    chart = page.locator("#chart")
    box = chart.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
    assert chart.evaluate("svg => svg.viewBox.baseVal.width") == round(box["width"])
    tab.screenshot("narrow-360")


def test_the_form_works_with_the_keyboard_alone(playground: Playground) -> None:
    playground.open()
    page = playground.page
    focused = []
    for _ in TAB_ORDER:
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
    assert focused == TAB_ORDER
    assert page.locator("#decide").evaluate("b => [b.tagName, b.type]") == ["BUTTON", "submit"]
    assert page.locator("#send").evaluate("b => [b.tagName, b.type]") == ["BUTTON", "button"]
    # Every control has a label of its own.
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select, textarea')]
        .filter(c => !document.querySelector(`label[for="${c.id}"]`)).map(c => c.id)""")
    assert unlabelled == []

    # Fill the form from the prompt on, by keys only, and press Enter in the last field.
    page.locator("#api-key").focus()
    typed = {"input": "Write a haiku about the sea.", "min_quality": "3", "max_cost_usd": "0.002",
             "max_latency_ms": "1000", "prefer_provider": "m", "strict_budget": " ", "strict_quality": "",
             "task_type": "su", "expected_output_tokens": "128"}
    for control_id, keys in typed.items():
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == control_id
        if control_id == "input":
            page.keyboard.press("ControlOrMeta+a")
        if keys == " ":
            page.keyboard.press("Space")
        elif keys:
            page.keyboard.type(keys)
    with page.expect_request(is_route_call) as sent:
        page.keyboard.press("Enter")
    page.locator("#chart .chosen").wait_for()
    constraints = {**HAIKU_REQUEST["constraints"], "strict_budget": True}
    assert sent.value.post_data_json == {**DRY_RUN, "constraints": constraints}
    assert page.locator("#chart .chosen").get_attribute("data-model") == "mock:advanced"
    playground.screenshot("keyboard-decided")

    # Then Tab to Send and press Enter: the real call.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "send"
    page.keyboard.press("Enter")
    page.locator("#answer").wait_for()
    assert page.locator("#response").inner_text().startswith("[MOCK:advanced]")


def test_the_api_key_is_sent_as_x_api_key_and_kept_in_session_storage_never_in_the_url(
    open_tab: Callable[[int], Playground],
) -> None:
    tab = open_tab(1280)
    requests: list[Request] = []
    tab.page.on("request", lambda request: requests.append(request))
    tab.open()
    page = tab.page
    page.wait_for_load_state("networkidle")
    # No key typed: no header at all, as locally.
    assert requests and all(r.header_value("x-api-key") is None for r in requests)

    requests.clear()
    page.locator("#api-key").fill(API_KEY)
    page.keyboard.press("Tab")  # a changed key reloads the registry with it
    page.wait_for_load_state("networkidle")
    tab.fill(HAIKU_FORM)
    decide(tab)
    calls = [r for r in requests if r.resource_type == "fetch"]
    assert {urlsplit(r.url).path for r in calls} >= {"/models", "/route"}
    assert all(r.header_value("x-api-key") == API_KEY for r in calls)
    assert page.evaluate("sessionStorage.getItem('costroute.apiKey')") == API_KEY
    assert page.evaluate("localStorage.length") == 0
    assert API_KEY not in page.url and all(API_KEY not in r.url for r in requests)
    assert API_KEY not in json.dumps([r.post_data_json for r in calls if r.post_data])

    # A reload of the tab keeps it (and sends it from the first call on); another tab's session has none.
    requests.clear()
    page.reload()
    page.locator("#registry-rows tr").first.wait_for()
    assert page.locator("#api-key").input_value() == API_KEY
    models_call = next(r for r in requests if urlsplit(r.url).path == "/models")
    assert models_call.header_value("x-api-key") == API_KEY
    other = open_tab(1280)
    other.open()
    assert other.page.locator("#api-key").input_value() == ""


def test_every_call_is_relative_to_the_page_so_it_works_under_a_stage_prefix(playground: Playground) -> None:
    """API Gateway serves the page at https://id.execute-api.../prod/ and passes /prod/route on as /route."""
    page = playground.page

    def strip_stage(route: Route) -> None:
        parts = urlsplit(route.request.url)
        upstream = urlunsplit(parts._replace(path=parts.path.removeprefix("/prod") or "/"))
        route.fulfill(response=route.fetch(url=upstream))

    page.route(lambda url: urlsplit(url).path.startswith("/prod"), strip_stage)
    # The stage root without its slash, as API Gateway also serves it: the page adds the slash.
    playground.open("prod")
    assert page.url == playground.base + "prod/"
    playground.fill(HAIKU_FORM)
    decide(playground)
    assert page.locator("#chart .chosen").get_attribute("data-model") == "mock:advanced"
    # Everything the page loaded and called went through the stage. (Before the page's first script
    # adds the slash, Chromium's preload scanner may fetch the assets relative to /prod, a request
    # for /assets/... that API Gateway refuses; the document that made it is gone by then.)
    loaded = page.evaluate("performance.getEntriesByType('resource').map(entry => new URL(entry.name).pathname)")
    assert loaded and all(path.startswith("/prod/") for path in loaded), loaded
    assert {"/prod/models", "/prod/route", "/prod/assets/playground.js", "/prod/assets/playground.css"} <= set(loaded)
    assert playground.unexpected_console_errors() == []
    playground.screenshot("stage-prefix")


USAGE_GROUPS: list[dict[str, Any]] = [
    {"key": "2026-12-01", "requests": 3, "cost_usd": 0.0019,
     "by_model": {"mock:advanced": {"cost_usd": 0.0016, "requests": 2}, "mock:basic": {"cost_usd": 0.0003, "requests": 1}}},
    {"key": "2026-12-02", "requests": 0, "cost_usd": 0, "by_model": {}},
    {"key": "2026-12-03", "requests": 4, "cost_usd": 0.0023, "by_model": {"mock:advanced": {"cost_usd": 0.0023, "requests": 4}}},
]
# The shape GET usage?group_by=day will answer (it comes with budgets).
USAGE: dict[str, Any] = {
    "caller": "key-123",
    "scope": "caller",
    "from": "2026-12-01",
    "to": "2026-12-03",
    "group_by": "day",
    "totals": {"requests": 7, "cost_usd": 0.0042, "baseline_cost_usd": 0.0279, "saved_usd": 0.0237},
    "groups": USAGE_GROUPS,
    "budget": {"windows": [
        {"window": "day", "period": "2026-12-03", "limit_usd": 0.01, "spent_usd": 0.0023, "reserved_usd": 0.0005,
         "remaining_usd": 0.0072, "resets_at": "2026-12-04T00:00:00Z"},
        # No reserved_usd: a window without reservations in flight may leave it out.
        {"window": "month", "period": "2026-12", "limit_usd": 0.5, "spent_usd": 0.0042,
         "remaining_usd": 0.4958, "resets_at": "2027-01-01T00:00:00Z"},
    ]},
}


def test_the_usage_view_appears_when_get_usage_answers_and_draws_it(playground: Playground) -> None:
    """GET usage does not exist yet: this feeds the page the shape it will answer."""
    page = playground.page
    page.route("**/usage?group_by=day", lambda route: route.fulfill(status=200, json=USAGE))
    playground.open()
    tab = page.get_by_role("tab", name="Usage")
    tab.wait_for()
    tab.click()
    assert page.locator("#view-usage").is_visible() and page.locator("#view-route").is_hidden()
    segments = page.locator("#usage-chart rect[data-model]")
    drawn = segments.evaluate_all("rects => rects.map(r => [r.dataset.day, r.dataset.model])")
    assert drawn == [[g["key"], m] for g in USAGE_GROUPS for m in sorted(g["by_model"])]
    # Stacked: a day's segments are one bar, the dearer day's bar the taller.
    heights = segments.evaluate_all("rects => rects.map(r => r.getBBox().height)")
    assert heights[0] / heights[2] == pytest.approx(0.0016 / 0.0023, rel=0.01)
    windows = page.locator("#budget-windows li").all_inner_texts()
    assert windows[0].startswith("Day 2026-12-03: $0.0072 remaining of $0.01")
    assert windows[1].startswith("Month 2026-12: $0.4958 remaining of $0.5 ($0.0042 spent); resets")
    # Each window's bar: the track, then spent and reserved as percentages of the limit.
    bars = page.locator("#budget-windows rect").evaluate_all("rects => rects.map(r => Number(r.getAttribute('width')))")
    assert bars == pytest.approx([100, 23, 5, 100, 0.84, 0])
    assert page.locator("#usage-days tr").count() == 3
    playground.screenshot("usage")
    # Arrow keys move between the tabs.
    page.keyboard.press("ArrowLeft")
    assert page.locator("#view-route").is_visible()
