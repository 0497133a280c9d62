"""The Space in headless Chromium: sign-in through the local Hub's OAuth, real jobs.

The tests run in file order and share one Space: alice's release of the private
source is what bob must not see later. Screenshots of the main states go to
test-artifacts/space/.
"""

from __future__ import annotations

import json
import re

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError
from playwright.sync_api import Page, expect

from space_helpers import GATED_SOURCE, LARGE_SOURCE, OVERFLOW_SOURCE, PRIVATE_SOURCE, screenshot, screenshot_until

pytestmark = pytest.mark.slow

# A real job on the tiny model takes about two minutes on 2 loaded cores.
JOB_TIMEOUT_MS = 480_000
PRIVATE_RELEASE = "alice/phi3-private-tiny-GGUF"
OVERFLOW_RELEASE = "alice/phi3-f16-overflow-GGUF"
GATED_RELEASE = "hubquant-org/phi3-gated-tiny-GGUF"
TYPED_TARGET = "gguf:Q4_K_M:output=Q8_0"
TYPED_FILE = "phi3-private-tiny-Q4_K_M-output-Q8_0.gguf"


def sign_in(page: Page, url: str, username: str, *, shot: str | None = None) -> None:
    page.goto(url)
    page.locator("#login").click()
    page.locator("#username").fill(username)
    if shot:
        screenshot(page, shot)
    page.locator("button[value=authorize]").click()
    expect(page.locator("#signin-status")).to_contain_text(f"Signed in as {username}")
    expect(page.locator("#login")).to_contain_text(f"Logout ({username})")


def choose_model(page: Page, query: str, repo_id: str) -> None:
    """Type `query`, wait for the search results to settle on `repo_id`, and pick it."""
    box = page.locator("#model input")
    box.click()
    box.press_sequentially(query, delay=60)
    # Each key press sends a search and replaces the list, so the option is
    # found by its label and clicked once it is shown.
    option = page.locator(f'#model ul li[aria-label="{repo_id}"]')
    # A search returned late can replace the list just as the option is
    # clicked, so the click is repeated until the box contains the choice.
    for attempt in range(5):
        expect(option).to_be_visible(timeout=30_000)
        option.click()
        try:
            expect(box).to_have_value(repo_id, timeout=3_000)
            break
        except AssertionError:
            if attempt == 4:
                raise
            box.click()  # reopen the list if the lost click closed it
    expect(page.locator("#summary")).to_contain_text(repo_id, timeout=60_000)


def paste_model(page: Page, text: str) -> None:
    box = page.locator("#model input")
    box.fill(text)
    box.press("Enter")


def set_targets(page: Page, wanted: list[str]) -> None:
    """Open the advanced panel and leave exactly `wanted` ticked."""
    advanced = page.get_by_text("Advanced: exact targets and options")
    if not page.locator("#targets").is_visible():
        advanced.click()
    for label in page.locator("#targets label").all_inner_texts():
        box = page.locator("#targets").get_by_label(label.strip(), exact=True)
        if label.strip() in wanted:
            box.check()
        else:
            box.uncheck()


def status_table(page: Page) -> dict[str, tuple[str, str]]:
    # gradio 6 draws the body of a Dataframe as ARIA grid rows, not table rows.
    rows = {}
    for row in page.locator("#job-status [role=row].virtual-row").all():
        cells = [cell.strip() for cell in row.locator("[role=gridcell]").all_inner_texts()]
        if len(cells) >= 3 and cells[0]:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def start_job(page: Page) -> str:
    """Click the run button and return the id of the job it started."""
    page.locator("#run").click()
    message = page.locator("#run-message")
    expect(message).to_contain_text("Started job")
    job_id = re.search(r"Started job (\w+)", message.inner_text()).group(1)
    expect(page.locator("#job-heading")).to_contain_text(f"Job {job_id}")
    return job_id


def wait_for_job_end(page: Page, job_id: str) -> str:
    heading = page.locator("#job-heading")
    expect(heading).to_contain_text(re.compile(f"Job {job_id}: .* state (done|failed)"), timeout=JOB_TIMEOUT_MS)
    return heading.inner_text()


def test_signed_out_starts_nothing(space_app, browser):
    page = browser().new_page()
    page.goto(space_app)
    expect(page.locator("#signin-status")).to_contain_text("Sign in to start a job")
    # Before any source is described, releases would be private.
    expect(page.locator("#public input")).not_to_be_checked()
    paste_model(page, PRIVATE_SOURCE)
    page.get_by_label("Any 64-bit CPU").check()
    page.locator("#run").click()
    expect(page.locator("#run-message")).to_contain_text("Sign in to start a job")
    expect(page.locator("#job-picker input")).to_have_value("")
    screenshot(page, "01-signed-out")


def test_alice_publishes_private_release(space_app, browser, hub, space_sources):
    context = browser()
    page = context.new_page()
    sign_in(page, space_app, "alice", shot="02-consent")
    choose_model(page, "phi3-priv", PRIVATE_SOURCE)
    summary = page.locator("#summary")
    expect(summary).to_contain_text("Phi3ForCausalLM")
    expect(summary).to_contain_text("private")
    expect(page.locator("#public input")).not_to_be_checked()

    page.get_by_label("Macs with Apple silicon").check()
    page.get_by_label("NVIDIA GPUs").check()
    page.get_by_text("Advanced: exact targets and options").click()
    for target in ("gguf:Q4_K_M", "gguf:Q8_0", "gguf:F16"):
        expect(page.locator("#targets").get_by_label(target, exact=True)).to_be_checked()
    set_targets(page, ["gguf:Q8_0"])
    # An option of one backend, typed in the advanced panel: a Q4_K_M file whose output matrix is Q8_0.
    typed = page.locator("#typed-targets textarea")
    typed.fill(TYPED_TARGET)
    typed.press("Enter")
    expect(summary).to_contain_text(f"{PRIVATE_RELEASE} (new repo, private)")
    expect(summary).to_contain_text(TYPED_FILE)
    screenshot(page, "03-main-form")
    screenshot_until(page, "space-form", "#run")

    job_id = start_job(page)
    expect(page.locator("#job-picker input")).to_have_value(re.compile(f"{re.escape(PRIVATE_SOURCE)} .*\\({job_id}\\)$"))
    expect(page.locator("#job-status")).to_contain_text(re.compile("downloading|converting|quantizing|validating|publishing"), timeout=120_000)
    screenshot(page, "04-running")

    # Closing the tab leaves the job running; a new tab of the same user finds it.
    page.close()
    page = context.new_page()
    page.goto(space_app)
    expect(page.locator("#signin-status")).to_contain_text("Signed in as alice")
    expect(page.locator("#job-picker input")).to_have_value(re.compile(f"\\({job_id}\\)$"))
    heading = wait_for_job_end(page, job_id)
    assert "state done" in heading, heading
    rows = status_table(page)
    assert rows["gguf:Q8_0"][0] == "done"
    assert rows[TYPED_TARGET][0] == "done"
    results = page.locator("#job-results")
    expect(results).to_contain_text("KL mean")
    page.get_by_text("Model cards").click()
    expect(page.locator("#job-cards")).to_contain_text(f"Card of {PRIVATE_RELEASE}")
    screenshot(page, "05-done")

    link = results.get_by_role("link", name=PRIVATE_RELEASE)
    assert link.get_attribute("href") == f"{hub.url}/{PRIVATE_RELEASE}"
    # gradio opens Markdown links in a new tab.
    with context.expect_page() as opened:
        link.click()
    release_page = opened.value
    expect(release_page.locator("#visibility")).to_have_text("private")
    expect(release_page.locator("#files")).to_contain_text("phi3-private-tiny-Q8_0.gguf")
    expect(release_page.locator("#card")).to_contain_text(f"base_model: {PRIVATE_SOURCE}")
    screenshot(release_page, "06-release-page")

    owner = HfApi(endpoint=hub.url, token=hub.token_for("alice"))
    info = owner.model_info(PRIVATE_RELEASE)
    assert info.private is True
    files = owner.list_repo_files(PRIVATE_RELEASE)
    assert "phi3-private-tiny-Q8_0.gguf" in files
    assert TYPED_FILE in files
    card = open(owner.hf_hub_download(PRIVATE_RELEASE, "README.md")).read()
    assert f"base_model: {PRIVATE_SOURCE}" in card
    manifest = json.load(open(owner.hf_hub_download(PRIVATE_RELEASE, "hubquant.json")))
    assert manifest["source"]["sha"] == space_sources[PRIVATE_SOURCE]
    # The Space's own token (carol's) published nothing.
    assert list(HfApi(endpoint=hub.url, token=hub.token_for("carol")).list_models(author="carol")) == []


def test_failing_target_publishes_others(space_app, browser, hub):
    page = browser().new_page()
    sign_in(page, space_app, "alice")
    paste_model(page, f"{hub.url}/{OVERFLOW_SOURCE}")
    expect(page.locator("#summary")).to_contain_text(OVERFLOW_SOURCE)
    # A public source ticks the box once it is described.
    expect(page.locator("#public input")).to_be_checked()
    page.get_by_label("Any 64-bit CPU").check()
    set_targets(page, ["gguf:Q8_0", "gguf:F16"])
    expect(page.locator("#summary")).to_contain_text("phi3-f16-overflow-F16.gguf")
    heading = wait_for_job_end(page, start_job(page))
    assert "state failed" in heading, heading
    assert "1 of 2 target(s) failed" in heading
    rows = status_table(page)
    assert rows["gguf:Q8_0"][0] == "done"
    assert rows["gguf:F16"][0] == "failed"
    assert "beyond the F16 range" in rows["gguf:F16"][1]
    expect(page.locator("#job-results")).to_contain_text("gguf:F16 failed and was not published")
    screenshot(page, "07-failed-target")

    files = HfApi(endpoint=hub.url, token=hub.token_for("alice")).list_repo_files(OVERFLOW_RELEASE)
    assert "phi3-f16-overflow-Q8_0.gguf" in files
    assert not [name for name in files if "F16" in name]


def test_large_source_not_started(space_app, browser):
    page = browser().new_page()
    sign_in(page, space_app, "alice")
    jobs_before = page.locator("#job-picker input").input_value()
    paste_model(page, LARGE_SOURCE)
    expect(page.locator("#summary")).to_contain_text(LARGE_SOURCE)
    page.get_by_label("Any 64-bit CPU").check()
    page.locator("#run").click()
    message = page.locator("#run-message")
    expect(message).to_contain_text("Not started")
    expect(message).to_contain_text("over this Space's limit of 0.06 GB per source")
    expect(page.locator("#job-picker input")).to_have_value(jobs_before)
    screenshot(page, "08-over-limit")


def test_bob_sees_no_alice_job_or_source(space_app, browser, hub):
    page = browser().new_page()
    sign_in(page, space_app, "bob")
    expect(page.locator("#job-heading")).to_contain_text("No job selected")
    page.locator("#job-picker").click()
    assert page.locator("#job-picker ul li").all_inner_texts() in ([], ["No options"])
    page.keyboard.press("Escape")

    box = page.locator("#model input")
    box.click()
    box.press_sequentially("phi3-priv", delay=60)
    page.wait_for_timeout(2000)
    assert not [text for text in page.locator("#model ul li").all_inner_texts() if PRIVATE_SOURCE in text]
    box.press("Escape")

    paste_model(page, PRIVATE_SOURCE)
    expect(page.locator("#summary")).to_contain_text("was not found")
    page.get_by_label("Any 64-bit CPU").check()
    page.locator("#run").click()
    expect(page.locator("#run-message")).to_contain_text("Not started")
    screenshot(page, "09-second-user")

    page.goto(f"{hub.url}/{PRIVATE_RELEASE}")
    expect(page.locator("body")).to_contain_text("Repository not found")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=hub.token_for("bob")).model_info(PRIVATE_RELEASE)


def choose_namespace(page: Page, namespace: str) -> None:
    page.locator("#namespace input").click()
    page.locator(f'#namespace ul li[aria-label="{namespace}"]').click()
    expect(page.locator("#namespace input")).to_have_value(namespace)


def test_bob_publishes_gated_source_to_his_organisation(space_app, browser, hub, space_sources):
    """bob's sign-in token reads a gated source he was granted and creates a repo in hubquant-org."""
    page = browser().new_page()
    sign_in(page, space_app, "bob")
    paste_model(page, GATED_SOURCE)
    summary = page.locator("#summary")
    expect(summary).to_contain_text(re.compile(r"Access\s+gated"))
    expect(page.locator("#public input")).not_to_be_checked()
    page.get_by_label("Any 64-bit CPU").check()
    set_targets(page, ["gguf:Q8_0"])
    choose_namespace(page, "hubquant-org")
    expect(summary).to_contain_text(f"{GATED_RELEASE} (new repo, private)")
    expect(summary).to_contain_text("Estimated peak memory")

    job_id = start_job(page)
    heading = wait_for_job_end(page, job_id)
    assert "state done" in heading, heading
    assert status_table(page)["gguf:Q8_0"][0] == "done"
    # The log shows the job's own lines as it runs.
    expect(page.locator("#job-log textarea")).to_have_value(re.compile(f"pinned to commit {space_sources[GATED_SOURCE]}"))
    screenshot(page, "10-gated-organisation")

    bob = HfApi(endpoint=hub.url, token=hub.token_for("bob"))
    info = bob.model_info(GATED_RELEASE)
    assert info.private is True
    assert "phi3-gated-tiny-Q8_0.gguf" in bob.list_repo_files(GATED_RELEASE)
    manifest = json.load(open(bob.hf_hub_download(GATED_RELEASE, "hubquant.json")))
    assert manifest["source"] == {"id": GATED_SOURCE, "sha": space_sources[GATED_SOURCE], "local": False}
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=hub.token_for("carol")).model_info(GATED_RELEASE)
