#!/usr/bin/env python3
"""Differential check of qeval's chat-template renderer against Python Jinja2.

Usage: SOURCE_DATE_EPOCH=1752148800 scripts/jinja_diff.py [DIR]
Renders every template of ../shared/testdata/chat-templates/cases.json with ten
conversations each (the case's own, generation prompt flipped, a system turn, unicode and
quotes, a short multi-turn, enable_thinking, tools with tool calls as a dict and as a
string, multimodal content, reasoning) through Python Jinja2 (set up as transformers sets
it up; scripts/jinja_expected.py) and through `./qeval template`, and reports every
difference (a Python error must be an exit 2).  DIR: also every DIR/*.jinja (e.g. llama.cpp's models/templates) with a
system/user/assistant/user conversation and the same ten variants.  Needs jinja2; qeval
never runs this.
"""
import json, sys, os, subprocess, copy, tempfile
tmpdir = tempfile.mkdtemp()
exec(open(os.path.join(os.path.dirname(__file__), 'jinja_expected.py')).read().split("cases = [")[0])
d = json.load(open(os.path.join(os.environ.get('QEVAL_ASSETS', '../shared'), 'testdata/chat-templates/cases.json')))
def variants(ctx):
    out = [ctx]
    c = copy.deepcopy(ctx); c['add_generation_prompt'] = not c.get('add_generation_prompt', False); out.append(c)
    c = copy.deepcopy(ctx)
    if c['messages'] and c['messages'][0].get('role') != 'system':
        c['messages'] = [{"role": "system", "content": "You are \"helpful\" — it's café time.\n  Be brief. "}] + c['messages']
    out.append(c)
    c = copy.deepcopy(ctx); c['messages'] = [{"role": "user", "content": "  Héllo 'x' {{ not jinja }} \n\n"}]; c['add_generation_prompt'] = True; out.append(c)
    c = copy.deepcopy(ctx); c['messages'] = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]; c['add_generation_prompt'] = True; c.pop('tools', None); out.append(c)
    c = copy.deepcopy(ctx); c['enable_thinking'] = False; c['add_generation_prompt'] = True; out.append(c)
    c = copy.deepcopy(ctx); c['add_generation_prompt'] = True
    c['tools'] = [{"type": "function", "function": {"name": "get_weather", "description": "Weather \"now\"", "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Zürich"]}, "days": {"type": "integer", "default": 3}}, "required": ["city"]}}}]
    c['messages'] = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 3, "ratio": 0.25, "ok": True, "none": None}}}]}, {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 20.5}"}, {"role": "user", "content": "Thanks"}]
    out.append(c)
    c = copy.deepcopy(c); c['messages'][1]['tool_calls'][0]['function']['arguments'] = '{"city": "Zürich"}'; c['messages'][1]['content'] = None; out.append(c)
    c = copy.deepcopy(ctx); c['messages'] = [{"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image"}, {"type": "text", "text": "what?"}]}]; c['add_generation_prompt'] = True; out.append(c)
    c = copy.deepcopy(ctx); c['messages'] = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>\nreason\n</think>\n\nanswer", "reasoning_content": "deep"}, {"role": "user", "content": "b"}]; out.append(c)
    return out
import glob
if len(sys.argv) > 1:
    base = {"messages": [{"role": "system", "content": "You are a bot."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}],
            "bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": False}
    for tf in sorted(glob.glob(os.path.join(sys.argv[1], '*.jinja'))):
        d.append({"name": os.path.basename(tf), "chat_template": open(tf).read(), "context": base})
n = bad = nerr = 0
for i, case in enumerate(d):
    tf = f'{tmpdir}/t{i}.jinja'
    open(tf, 'w').write(case['chat_template'])
    for j, ctx in enumerate(variants(case['context'])):
        cf = f'{tmpdir}/c{i}_{j}.json'
        json.dump(ctx, open(cf, 'w'))
        try:
            py = env.from_string(case['chat_template']).render(**ctx); perr = None
        except Exception as e:
            py = None; perr = str(e); nerr += 1
        r = subprocess.run(['./qeval', 'template', '--chat-template', tf, '--context', cf], capture_output=True, env=dict(os.environ, SOURCE_DATE_EPOCH='1752148800'))
        n += 1
        if py is None:
            if r.returncode != 2:
                bad += 1; print(f"MISMATCH {case['name']} v{j}: python error {perr!r}, C rc={r.returncode}")
        else:
            c = r.stdout.decode('utf-8', 'replace')
            if r.returncode != 0 or c != py:
                bad += 1
                k = 0
                while k < min(len(c), len(py)) and c[k] == py[k]: k += 1
                print(f"MISMATCH {case['name']} v{j}: rc={r.returncode} {r.stderr.decode()[:200]} at {k}: py={py[k:k+80]!r} c={c[k:k+80]!r}")
print(n, "renders,", nerr, "of them template errors in Python,", bad, "mismatches")
