#!/usr/bin/env python3
"""Expected renders for tests/test_jinja.c's language cases.

Usage: SOURCE_DATE_EPOCH=1752148800 scripts/jinja_expected.py tests/data/jinja/language.txt
Cases are separated by a line '====' and a template from its JSON context by '----'.
Prints C initializers {template, context, expected} (expected NULL: Jinja2 raised).
The environment is the one transformers' apply_chat_template builds (Jinja2 3.1):
ImmutableSandboxedEnvironment(trim_blocks, lstrip_blocks, loopcontrols), a generation
block, tojson = json.dumps(ensure_ascii=False), raise_exception and strftime_now.
Needs jinja2; qeval itself never runs this.
"""
import json, sys
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.ext import loopcontrols
from jinja2.ext import Extension
from jinja2 import nodes
import os, datetime
class Gen(Extension):
    tags = {'generation'}
    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(['name:endgeneration'], drop_needle=True)
        return nodes.CallBlock(self.call_method('_gen'), [], [], body).set_lineno(lineno)
    def _gen(self, caller):
        return caller()
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, Gen])
env.globals['strftime_now'] = lambda f: datetime.datetime.fromtimestamp(int(os.environ['SOURCE_DATE_EPOCH']), datetime.timezone.utc).strftime(f)
def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
def raise_exception(m): raise Exception(m)
env.filters['tojson'] = tojson
env.globals['raise_exception'] = raise_exception
cases = [l for l in open(sys.argv[1]).read().split('\n====\n') if l.strip()]
out=[]
for c in cases:
    tpl, _, ctx = c.partition('\n----\n')
    ctxd = json.loads(ctx) if ctx.strip() else {}
    try:
        r = env.from_string(tpl).render(**ctxd)
        out.append((tpl, ctx.strip() or None, r, None))
    except Exception as e:
        out.append((tpl, ctx.strip() or None, None, type(e).__name__+': '+str(e)))
def cstr(s):
    return '"' + s.encode('utf-8').decode('latin-1').replace('\\','\\\\').replace('"','\\"').replace('\n','\\n').replace('\t','\\t').replace('\r','\\r').encode('latin-1').decode('utf-8') + '"'
for tpl, ctx, r, err in out:
    if err: print("/* ERR", err.replace('*/','* /'), "*/")
    print("    {%s,\n     %s,\n     %s}," % (cstr(tpl), cstr(ctx) if ctx else "NULL", cstr(r) if r is not None else "NULL"))
