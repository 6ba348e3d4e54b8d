"""The loom in a real browser (Debian's Chromium driven by Playwright) on the tiny model.

Screenshots of the main views are written to $ALIGNLAB_LOOM_SCREENSHOTS when set (docs/images
holds the ones the docs show), else to a temporary folder.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("playwright")
if shutil.which("chromium") is None:
    pytest.skip("Chromium is not installed (make test installs it: apt-get install chromium)", allow_module_level=True)


PAYLOADS = ['<img src=x onerror="alert(1)">', "<script>alert(2)</script>", '"><svg onload=alert(3)>']


@pytest.fixture
def shots(tmp_path):
    folder = os.environ.get("ALIGNLAB_LOOM_SCREENSHOTS")
    path = (tmp_path / "shots") if not folder else __import__("pathlib").Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def tree(live_loom):
    url, store = live_loom
    return store.create_tree("The lighthouse keeper opened the door and", "tester", title="Lighthouse")


def open_tree(page, url, tree_id, node_id=None):
    page.goto(f"{url}#tree={tree_id}" + (f"&node={node_id}" if node_id else ""))
    page.wait_for_selector("#read-view .node")
    if node_id:
        page.wait_for_function(f"window.loom.state.current === '{node_id}'")
        page.wait_for_selector(f"#read-view .node.current[data-id='{node_id}']")


def test_generate_navigate_by_keyboard_compare_rank_and_edit(page, live_loom, tree, shots):
    url, store = live_loom
    open_tree(page, url, tree["id"])
    page.fill("#gen-n", "3")
    page.fill("#gen-max", "8")
    page.fill("#gen-seed", "5")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#children .child[data-id]').length === 3")
    kids = store.children(tree["root_id"])
    assert len(kids) == 3
    page.screenshot(path=str(shots / "loom-read-and-children.png"), full_page=True)

    # keyboard: l opens a child, j/k move among siblings, h goes back to the parent
    page.keyboard.press("l")
    page.wait_for_function(f"window.loom.state.current === '{kids[0]['id']}'")
    page.keyboard.press("j")
    page.wait_for_function(f"window.loom.state.current === '{kids[1]['id']}'")
    page.keyboard.press("k")
    page.wait_for_function(f"window.loom.state.current === '{kids[0]['id']}'")
    page.wait_for_selector(f"#read-view .node.current[data-id='{kids[0]['id']}']")
    assert kids[0]["text"] in page.inner_text("#read-view")
    page.keyboard.press("h")
    page.wait_for_function(f"window.loom.state.current === '{tree['root_id']}'")

    # compare two siblings, then rank the three after moving the last one up twice
    page.check(f"#children .child[data-id='{kids[0]['id']}'] input[type=checkbox]")
    page.check(f"#children .child[data-id='{kids[2]['id']}'] input[type=checkbox]")
    page.wait_for_selector("#compare:not([hidden])")
    page.screenshot(path=str(shots / "loom-compare.png"), full_page=True)
    page.click("#prefer-b")
    page.wait_for_function("document.querySelector('#status').textContent === 'recorded compare'")
    (compare,) = store.events(tree["id"], kinds=["compare"])
    assert compare["payload"]["choice"] == "b" and {compare["payload"]["a"], compare["payload"]["b"]} == {
        kids[0]["id"], kids[2]["id"]}
    for _ in range(2):
        page.click(f"#children .child[data-id='{kids[2]['id']}'] button.up")
    page.click("#rank")
    page.wait_for_function("document.querySelector('#status').textContent === 'recorded rank'")
    (rank,) = store.events(tree["id"], kinds=["rank"])
    assert rank["payload"]["order"] == [kids[2]["id"], kids[0]["id"], kids[1]["id"]]

    # edit a model node: it becomes mixed and keeps a revision
    page.click(f"#children .child[data-id='{kids[1]['id']}'] .child-text")
    page.wait_for_function(f"window.loom.state.current === '{kids[1]['id']}'")
    page.keyboard.press("e")
    page.fill("#editor-text", "the sea was calm.")
    page.click("#editor-save")
    page.wait_for_function("document.querySelector('#read-view').innerText.includes('the sea was calm.')")
    edited = store.node(kids[1]["id"])
    assert edited["source"] == "mixed" and len(store.revisions(kids[1]["id"])) == 1


def test_counterfactual_token_next_tokens_graph_and_export(page, live_loom, tree, shots):
    url, store = live_loom
    open_tree(page, url, tree["id"])
    page.fill("#gen-n", "1")
    page.fill("#gen-max", "6")
    page.fill("#gen-seed", "3")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#children .child[data-id]').length === 1")
    (child,) = store.children(tree["root_id"])
    open_tree(page, url, tree["id"], child["id"])
    page.click(f"#read-view .token[data-node='{child['id']}'][data-index='1']")
    page.wait_for_selector("#token-popup:not([hidden]) button.alt")
    page.screenshot(path=str(shots / "loom-counterfactual.png"), full_page=True)
    page.click("#token-popup button.alt >> nth=-1")
    page.wait_for_function(f"window.loom.state.current !== '{child['id']}'")
    siblings = store.children(tree["root_id"])
    assert len(siblings) == 2
    branch = next(n for n in siblings if n["id"] != child["id"])
    assert branch["source"] == "mixed" and branch["intervention_bits"] > 0
    assert "intervention" in page.inner_text("#pressure")

    page.click("#next-tokens")
    page.wait_for_selector("#multiverse:not([hidden]) .block")
    assert page.locator("#multiverse .block").count() == 5 + 25
    # Block heights are path probabilities: the five first tokens' blocks are drawn in proportion.
    heights = page.eval_on_selector_all("#multiverse > .mv-col > .mv-row > .block",
                                        "bs => bs.map(b => b.getBoundingClientRect().height)")
    assert len(heights) == 5 and heights == sorted(heights, reverse=True) and sum(heights) <= 262
    page.screenshot(path=str(shots / "loom-multiverse.png"), full_page=True)
    # clicking a second-column block writes its two-token path below the node, as a person's choice
    # (dispatched: on the random tiny model a two-token path's block is a pixel high)
    page.dispatch_event("#multiverse > .mv-col > .mv-row:first-child > .mv-col > .mv-row:first-child > .block", "click")
    page.wait_for_function(f"window.loom.state.current !== '{branch['id']}'")
    (made,) = store.children(branch["id"])
    assert made["id"] == page.evaluate("window.loom.state.current")
    assert made["source"] == "human"
    # its bits are computed after the write commits; the page redraws the path's bits when they come
    page.wait_for_function(f"(window.loom.state.nodes.get('{made['id']}') || {{}}).intervention_bits > 0", timeout=60_000)
    assert store.node(made["id"])["intervention_bits"] > 0

    page.click("#show-graph")
    page.wait_for_selector("#graph-view circle")
    assert page.locator("#graph-view circle").count() == 4
    page.screenshot(path=str(shots / "loom-graph.png"), full_page=True)

    store.record(tree["id"], "compare", {"a": child["id"], "b": branch["id"], "choice": "a"}, "tester")
    page.click("#export-box summary")
    href = page.get_attribute("#export-links a:text-is('pairs')", "href")
    body = page.evaluate("async (u) => (await fetch(u)).text()", href)
    assert '"kind": "pair"' in body and body.count("\n") == 1


def test_injected_text_never_runs(page, live_loom, tree):
    url, store = live_loom
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    nodes = store.add_nodes(tree["root_id"], [{"text": p, "source": "human"} for p in PAYLOADS], "tester", kind="write")
    store.tag(nodes[0]["id"], PAYLOADS[1], "tester")
    for node, payload in zip(nodes, PAYLOADS):
        open_tree(page, url, tree["id"], node["id"])
        page.wait_for_function(f"window.loom.state.current === '{node['id']}'")
        span = page.locator(f"#read-view .node[data-id='{node['id']}']")
        assert span.inner_text() == payload
        assert page.locator("#read-view img, #read-view script, #read-view svg").count() == 0
        assert page.locator("#tree-view img, #tree-view script, #tree-view svg, #children img, #children svg").count() == 0
    page.wait_for_timeout(300)
    assert dialogs == []
    csp = page.evaluate("async () => (await fetch('/')).headers.get('content-security-policy')")
    assert "script-src 'self'" in csp


def test_the_injection_check_can_fail(page):
    """The control: the same payload set through innerHTML on a page without our defences runs."""
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.set_content("<div id='x'></div>")
    page.evaluate("(p) => { document.getElementById('x').innerHTML = p; }", PAYLOADS[0])
    page.wait_for_timeout(500)
    assert dialogs == ["1"]


def test_a_second_annotator_and_the_feedback_log(page, live_loom, tree):
    url, store = live_loom
    a, b = store.add_nodes(tree["root_id"], [{"text": " one"}, {"text": " two"}], "tester")
    store.record(tree["id"], "compare", {"a": a["id"], "b": b["id"], "choice": "a"}, "ann")
    store.record(tree["id"], "compare", {"a": a["id"], "b": b["id"], "choice": "a"}, "ben")
    open_tree(page, url, tree["id"])
    page.fill("#annotator", "cat")
    page.dispatch_event("#annotator", "change")
    page.click("#children .child[data-id='%s'] .child-text" % a["id"])
    page.wait_for_function(f"window.loom.state.current === '{a['id']}'")
    page.keyboard.press("+")
    page.wait_for_function("document.querySelector('#status').textContent === 'recorded thumb'")
    (thumb,) = store.events(tree["id"], kinds=["thumb"])
    assert thumb["author"] == "cat"
    page.click("#feedback-box summary")
    page.wait_for_function("document.querySelector('#agreement').textContent.includes('100%')")
    page.select_option("#event-annotator", "ann")
    page.wait_for_function("document.querySelectorAll('#event-log li').length === 1")


def test_highlight_split_note_and_branch_settings(page, live_loom, tree):
    url, store = live_loom
    (node,) = store.add_nodes(tree["root_id"], [{"text": " the sea was calm and grey"}], "tester")
    open_tree(page, url, tree["id"], node["id"])
    page.wait_for_function(f"window.loom.state.current === '{node['id']}'")
    select = """([id, start, end]) => {
        const span = document.querySelector(`#read-view .node[data-id="${id}"]`);
        const text = span.firstChild;
        const range = document.createRange();
        range.setStart(text, start); range.setEnd(text, end);
        const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
    }"""
    page.evaluate(select, [node["id"], 5, 8])
    page.click("#span-good")
    page.wait_for_function("document.querySelector('#status').textContent === 'recorded highlight'")
    (span,) = store.events(tree["id"], kinds=["highlight"])
    assert span["payload"] == {"start": 5, "end": 8, "label": "good",
                               "seen": {"prompt": store.text_of(node["parent_id"]), "text": node["text"]}}
    assert node["text"][5:8] == "sea"
    page.fill("#note", "grey is good")
    page.click("#save-note")
    page.wait_for_function("document.querySelector('#status').textContent === 'note saved'")
    assert store.node(node["id"])["note"] == "grey is good"
    page.fill("#gen-max", "5")
    page.click("#branch-settings")
    page.wait_for_function("document.querySelector('#status').textContent === 'settings kept for this branch'")
    assert store.node(node["id"])["meta"]["branch_settings"]["max_tokens"] == 5
    page.evaluate(select, [node["id"], 12, 12])
    page.click("#split")
    page.wait_for_function(f"window.loom.state.current !== '{node['id']}'")
    assert store.node(node["id"])["text"] == " the sea was"
    tail = store.children(node["id"])[0]
    assert tail["text"] == " calm and grey"
    page.click("#read-view .node[data-id='%s']" % node["id"], click_count=2)
    page.wait_for_function(f"window.loom.state.current === '{node['id']}'")
    page.click("#merge")
    page.wait_for_function("document.querySelector('#read-view').innerText.includes('was calm and grey')")
    assert store.node(node["id"])["text"] == " the sea was calm and grey"


def test_the_stop_buttons_end_generation_and_keep_exactly_what_was_shown(page, live_loom, tree):
    url, store = live_loom
    open_tree(page, url, tree["id"])
    page.fill("#gen-n", "2")
    page.fill("#gen-max", "1000")
    page.fill("#gen-seed", "7")
    page.fill("#gen-stop", "")
    page.click("#generate")
    streams = "#children .child.streaming .stream-text"
    page.wait_for_function(f"document.querySelectorAll('{streams}').length === 2 && "
                           f"document.querySelectorAll('{streams}')[0].textContent.length > 10")
    page.click("#children .child.streaming .e-stop >> nth=0")  # row 0: this should have ended here
    shown = page.eval_on_selector_all(streams, "spans => spans[0].textContent")
    page.wait_for_timeout(300)
    page.click("#gen-cancel")  # then stop everything
    page.wait_for_function("document.querySelector('#status').textContent.includes('stopped')")
    kids = store.children(tree["root_id"])
    assert len(kids) == 2 and {k["finish_reason"] for k in kids} == {"stop"}
    first = min(kids, key=lambda k: k["seed"])
    assert first["text"] == shown  # saved exactly as the person saw it at the stop
    assert all(len(k["tokens"]) < 1000 for k in kids)
    (stop,) = store.events(tree["id"], kinds=["stop"])
    assert stop["node_id"] == first["id"] and stop["payload"]["token_index"] == len(first["tokens"])
    assert stop["payload"]["char"] == len(first["text"].encode("utf-16-le")) // 2  # the page counts UTF-16 units


def test_outline_collapses_and_hoists_the_bar_keeps_what_you_set_and_judgements_show(page, live_loom, tree):
    url, store = live_loom
    root = tree["root_id"]
    a, b = store.add_nodes(root, [{"text": " the sea"}, {"text": " the hill"}], "tester")
    (deep,) = store.add_nodes(a["id"], [{"text": " was calm"}], "tester")
    open_tree(page, url, tree["id"])
    label = "#tree-view .label[data-id='%s']"
    assert page.locator(label % deep["id"]).count() == 1
    # collapse a: its child leaves the outline; expand again
    twisty = f"#tree-view li:has(> .label[data-id='{a['id']}']) > button.twisty"
    page.click(twisty)
    page.wait_for_function(f"!document.querySelector(\"{label % deep['id']}\")")
    page.click(twisty)
    page.wait_for_selector(label % deep["id"])
    # hoist a: the outline shows only its subtree; unhoist shows the whole tree
    page.click(label % a["id"])
    page.wait_for_function(f"window.loom.state.current === '{a['id']}'")
    page.click("#hoist")
    page.wait_for_function(f"!document.querySelector(\"{label % root}\")")
    assert page.locator(label % b["id"]).count() == 0 and page.locator(label % deep["id"]).count() == 1
    page.click("#unhoist")
    page.wait_for_selector(label % root)
    # the bar keeps what the person set while they move, until reset
    page.fill("#gen-max", "7")
    page.click(label % b["id"])
    page.wait_for_function(f"window.loom.state.current === '{b['id']}'")
    assert page.input_value("#gen-max") == "7" and "touched" in page.get_attribute("#gen-max", "class")
    page.click("#bar-reset")
    page.wait_for_function("document.querySelector('#gen-max').value === '48'")
    # a thumb shows on the node, and on its card among its siblings
    page.click("#thumb-up")
    page.wait_for_function("document.querySelector('#judged-here').textContent.includes('👍')")
    page.click(label % root)
    page.wait_for_function(f"window.loom.state.current === '{root}'")
    assert "👍" in page.inner_text(f"#children .child[data-id='{b['id']}'] .judged")
    assert page.locator(f"#children .child[data-id='{a['id']}'] .judged").count() == 0


def test_move_a_node_undo_an_archive_and_go_to_a_node_by_id(page, live_loom, tree):
    url, store = live_loom
    root = tree["root_id"]
    a, b = store.add_nodes(root, [{"text": " the sea"}, {"text": " the hill"}], "tester")
    open_tree(page, url, tree["id"], b["id"])
    page.click("#move-node")  # pick b ...
    page.click("#tree-view .label[data-id='%s']" % a["id"])  # ... its new parent ...
    page.wait_for_function(f"window.loom.state.current === '{a['id']}'")
    page.click("#move-node")  # ... move here
    page.wait_for_function("document.querySelector('#status').textContent === 'moved'")
    assert store.node(b["id"])["parent_id"] == a["id"]
    # archive b, then undo it with z
    page.keyboard.press("x")
    page.wait_for_function("document.querySelector('#status').textContent.includes('z to undo')")
    assert store.node(b["id"])["archived"]
    page.keyboard.press("z")
    page.wait_for_function("document.querySelector('#status').textContent === 'archive undone'")
    assert not store.node(b["id"])["archived"]
    # the search box takes a node id's tail, as the feedback log shows it
    page.click("#tree-view .label[data-id='%s']" % root)
    page.fill("#search", b["id"][-6:])
    page.press("#search", "Enter")
    page.wait_for_function(f"window.loom.state.current === '{b['id']}'")


def test_two_annotators_see_each_other_live(page, browser, browser_context_args, live_loom, tree):
    import httpx

    url, store = live_loom

    def open_as(p, who):
        p.goto(url + "static/favicon.svg")  # any page of the loom's origin: its localStorage
        p.evaluate(f"localStorage.setItem('loom-annotator', '{who}')")
        open_tree(p, url, tree["id"])

    open_as(page, "ann")
    other = browser.new_context(**browser_context_args)
    try:
        bob = other.new_page()
        open_as(bob, "bob")
        page.wait_for_function("document.querySelector('#presence').textContent === 'on this tree: ann, bob'")
        made = httpx.post(url + f"api/nodes/{tree['root_id']}/children", json={"text": " and the gulls"},
                          headers={"X-Annotator": "bob"}).json()
        # ann's page shows bob's branch without a reload
        page.wait_for_selector(f"#children .child[data-id='{made['id']}']")
        assert "bob: write" in page.inner_text("#status")
    finally:
        other.close()
    page.wait_for_function("document.querySelector('#presence').textContent === ''")


def test_judge_a_node_step_by_step_and_the_export_holds_the_labels(page, live_loom, tree, shots):
    """Steps: cut a node into lines, mark one right and one wrong, see the aggregate on the node,
    and download the steps export. The steps are node text (payloads included) shown as text."""
    import json

    url, store = live_loom
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    lines = [" she climbed the stairs.", *PAYLOADS, "The lamp was lit."]
    (node,) = store.add_nodes(tree["root_id"], [{"text": "\n".join(lines), "source": "human"}], "tester", kind="write")
    open_tree(page, url, tree["id"], node["id"])
    page.click("#steps")
    page.wait_for_selector("#steps-panel:not([hidden]) .step")
    steps = page.locator("#steps-panel .step")
    assert steps.count() == 5
    assert [steps.nth(i).locator(".step-text").inner_text() for i in range(5)] == lines
    assert page.locator("#steps-panel img, #steps-panel script, #steps-panel svg").count() == 0

    page.click("#steps-panel .step[data-index='0'] button.step-right")
    page.wait_for_selector("#steps-panel .step.right[data-index='0']")
    page.click("#steps-panel .step[data-index='2'] button.step-wrong")
    page.wait_for_selector("#steps-panel .step.wrong[data-index='2']")
    page.click("#steps-panel .step[data-index='4'] button.step-wrong")  # judged, then taken back
    page.wait_for_selector("#steps-panel .step.wrong[data-index='4']")
    page.click("#steps-panel .step[data-index='4'] button.step-clear")
    page.wait_for_selector("#steps-panel .step[data-index='4'][data-label='']")
    assert page.inner_text("#steps-summary") == "5 steps by lines · 2 judged · lowest: wrong"
    assert "steps ✗ 2/5" in page.inner_text("#judged-here")
    page.screenshot(path=str(shots / "loom-steps.png"), full_page=True)
    page.keyboard.press("h")  # the parent's list of continuations shows the mark on the node's card
    page.wait_for_function(f"window.loom.state.current === '{tree['root_id']}'")
    assert "steps ✗ 2/5" in page.inner_text(f"#children .child[data-id='{node['id']}'] .judged")
    # the steps follow the selected node: the root is one line, which this annotator has not judged
    page.wait_for_function("document.querySelector('#steps-summary').textContent === '1 step by lines · 0 judged'")

    page.click("#export-box summary")
    with page.expect_download() as download:
        page.click("#export-links a:text-is('steps')")
    rows = [json.loads(line) for line in open(download.value.path(), encoding="utf-8")]
    assert len(rows) == 1 and rows[0]["kind"] == "steps" and rows[0]["annotator"] == "anonymous"  # the page's default
    assert rows[0]["labels"] == [True, None, False, None, None]
    assert "".join(rows[0]["completions"]) == node["text"] and rows[0]["completions"][2] == PAYLOADS[1] + "\n"
    assert rows[0]["prompt"] == "The lighthouse keeper opened the door and"
    assert [e["payload"]["label"] for e in store.events(tree["id"], kinds=["step"])] == ["right", "wrong", "wrong",
                                                                                       "clear"]
    # Train a process reward model on those judgements from the page: it joins the loom's models.
    page.click("#train-box summary")
    page.click("#train-prm")
    page.wait_for_selector("#jobs .job:not(.running)", timeout=240_000)
    assert page.inner_text("#jobs .job").startswith("prm: done"), page.inner_text("#jobs .job")
    models = page.evaluate("fetch('/api/models').then(r => r.json())")
    assert [m["kind"] for m in models].count("process") == 1
    page.wait_for_timeout(300)
    assert dialogs == []


def test_a_process_reward_model_shows_p_right_beside_each_step(page, live_loom, tree, tmp_path):
    from alignlab.cli import main
    from alignlab.data import StepLabels, write_feedback

    url, store = live_loom
    data, out = tmp_path / "steps.jsonl", tmp_path / "prm"
    write_feedback(data, [StepLabels(f"Task {i}:", ["The sea is calm.\n", "The sea is awful."], [True, False])
                          for i in range(4)])
    assert main(["prm", "train", "--data", str(data), "--model", "tiny", "--eval-fraction", "0", "--out", str(out)]) == 0
    (node,) = store.add_nodes(tree["root_id"], [{"text": " she waited.\nThe sea is calm.\nThe sea is awful."}], "tester")
    open_tree(page, url, tree["id"], node["id"])
    page.click("#steps")
    page.wait_for_selector("#steps-panel .step")
    assert page.locator("#prm-select").count() == 0  # no process reward model yet: nothing to choose
    page.once("dialog", lambda d: d.accept(str(out)))  # + model asks for the folder
    page.click("#add-model")
    page.wait_for_function("[...document.querySelectorAll('#steps-panel .step-p')].length === 3 && "
                           "[...document.querySelectorAll('#steps-panel .step-p')].every(s => s.textContent.startsWith('P(right) '))")
    assert page.input_value("#prm-select") == str(out.resolve())
    assert page.locator("#model-select option").all_inner_texts() == ["tiny"]  # it scores; it does not write
    shown = [float(t.split()[-1]) for t in page.locator("#steps-panel .step-p").all_inner_texts()]
    assert all(0 <= p <= 1 for p in shown)
    page.select_option("#prm-select", "")  # none chosen: no scores
    page.wait_for_function("[...document.querySelectorAll('#steps-panel .step-p')].every(s => s.textContent === '')")


def test_presets_memory_and_reroll_from_the_page(page, live_loom, tree):
    url, store = live_loom
    root = tree["root_id"]
    open_tree(page, url, tree["id"], root)
    # a built-in preset fills the bar, marked as changed
    page.select_option("#preset-select", "greedy")
    assert page.input_value("#gen-n") == "1" and page.input_value("#gen-temp") == "0"
    assert "touched" in page.get_attribute("#gen-temp", "class")
    page.fill("#gen-max", "4")
    page.dispatch_event("#gen-max", "input")
    # the bar saved as a preset, under a name given in a dialog
    page.once("dialog", lambda dialog: dialog.accept("four greedy tokens"))
    page.click("#preset-save")
    page.wait_for_function("document.querySelector('#status').textContent === 'preset four greedy tokens saved'")
    assert store.preset("four greedy tokens")["settings"] == {"n": 1, "max_tokens": 4, "temperature": 0, "top_p": 1}
    # the tree's memory, kept from the page
    page.click("#context-toggle")
    page.fill("#memory", "A ship's log.\n")
    page.click("#context-save")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('memory kept')")
    assert store.tree(tree["id"])["settings"]["memory"] == "A ship's log.\n"
    # generate one, then reroll it in place (R) and bring the old one back (z)
    page.keyboard.press("g")
    page.wait_for_function(f"window.loom.state.kids.get('{root}')?.length === 1")
    first = store.children(root)[0]
    assert first["settings"]["memory"] == "A ship's log.\n" and first["settings"]["max_tokens"] == 4
    page.click("#tree-view .label[data-id='%s']" % first["id"])
    page.wait_for_function(f"window.loom.state.current === '{first['id']}'")
    page.keyboard.press("R")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('rerolled')")
    (second,) = store.children(root)
    assert second["id"] != first["id"] and store.node(first["id"])["archived"]
    assert page.evaluate("window.loom.state.current") == second["id"]
    page.keyboard.press("z")
    page.wait_for_function("document.querySelector('#status').textContent === 'archive undone'")
    assert [c["id"] for c in store.children(root)] == [first["id"], second["id"]]


def test_the_page_imports_an_exoloom_export(page, live_loom, tree, tmp_path):
    import json

    from tests.loom.test_store import EXOLOOM

    url, store = live_loom
    path = tmp_path / "fox.json"
    path.write_text(json.dumps(EXOLOOM))
    open_tree(page, url, tree["id"])
    page.set_input_files("#import-file", str(path))
    page.wait_for_function("document.querySelector('#status').textContent === 'imported 1 tree from fox.json'")
    imported = next(t for t in store.trees() if t["title"] == "fox")  # the file's name titles it from the page
    assert page.evaluate("window.loom.state.tree.tree.id") == imported["id"]
    assert len(store.tree_nodes(imported["id"])) == 4


def test_ask_me_offers_a_pair_says_why_and_asks_again_after_the_answer(page, live_loom, tree):
    url, store = live_loom
    kids = [store.add_nodes(tree["root_id"], [{"text": t, "source": "human", "intervention_bits": None}], "tester",
                            kind="write")[0] for t in (" the sea was calm.", " a gull cried.", " rain fell.")]
    open_tree(page, url, tree["id"], kids[0]["id"])  # asking moves to the pair's parent, wherever one stands
    page.click("#ask-me")
    page.wait_for_selector("#ask-why")
    page.wait_for_function(f"window.loom.state.current === '{tree['root_id']}'")
    assert "nats" in page.inner_text("#ask-why") and "Asked because" in page.inner_text("#ask-why")
    first = page.evaluate("window.loom.state.ask.pair")
    assert {first["a"], first["b"]} <= {k["id"] for k in kids}
    page.click("#prefer-a")
    # the next question, after learning from the answer, with the uncertainty trail question by question
    page.wait_for_function("window.loom.state.askHistory.length === 2 && "
                           "(document.querySelector('#ask-why') || {innerText: ''}).innerText.includes('→')")
    (event,) = store.events(tree["id"], kinds=["compare"])
    assert (event["payload"]["a"], event["payload"]["b"], event["payload"]["choice"]) == (first["a"], first["b"], "a")
    second = page.evaluate("window.loom.state.ask.pair")
    assert frozenset(second.values()) != frozenset(first.values())
    page.click("#stop-asking")
    page.wait_for_selector("#compare", state="hidden")
    assert page.evaluate("window.loom.state.ask") is None
