"""Chat templates for instruction-tuned DLMs (LLaDA-8B-Instruct): messages -> prompt text.

``render_chat(template, messages, bos_token=..., eos_token=...)`` renders a Hugging Face
``tokenizer_config.json`` ``chat_template`` the way ``transformers``' ``apply_chat_template``
does: with jinja2 when it is installed (a sandboxed environment, ``trim_blocks`` and
``lstrip_blocks`` on, ``messages``, ``bos_token``, ``eos_token`` and ``add_generation_prompt`` in
the context, ``raise_exception`` available to the template).

Without jinja2 only LLaDA-Instruct's own template can be rendered, by ``render_llada_chat``, a plain
Python transcription of it (``LLADA_CHAT_TEMPLATE``, the ``chat_template`` of
``GSAI-ML/LLaDA-8B-Instruct``'s ``tokenizer_config.json``)::

    <bos>  for the first message only
    <|start_header_id|>{role}<|end_header_id|>\\n\\n{content.strip()}<|eot_id|>   per message
    <|start_header_id|>assistant<|end_header_id|>\\n\\n                            always appended

(LLaDA's template appends the assistant header unconditionally, unlike Llama 3's, which does so
only with ``add_generation_prompt``.) Any other template without jinja2 is refused with the
install command. ``tests/dlm/test_llada_text.py`` checks that both paths give the same text.
"""

LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)

ROLES = ("system", "user", "assistant")


def check_messages(messages) -> list[dict]:
    """``[{"role": str, "content": str}, ...]`` (non-empty); a clear error otherwise."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} is {m!r}; each message needs a string 'role' and a string 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has role {m['role']!r}; use one of {list(ROLES)}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def render_llada_chat(messages, bos_token: str) -> str:
    """LLaDA-Instruct's chat template in Python (module docstring); equal to the jinja2 rendering."""
    parts = []
    for i, m in enumerate(check_messages(messages)):
        turn = f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
        parts.append(bos_token + turn if i == 0 else turn)
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def _same_template(a: str, b: str) -> bool:
    return "".join(a.split()) == "".join(b.split())


def render_chat(template: str, messages, *, bos_token: str, eos_token: str = "", add_generation_prompt: bool = True,
                use_jinja: bool | None = None) -> str:
    """Renders ``template`` for ``messages`` (module docstring).

    ``use_jinja``: None = jinja2 if importable; False forces the built-in LLaDA renderer (only for
    LLaDA's template).
    """
    messages = check_messages(messages)
    if not isinstance(template, str) or not template.strip():
        raise ValueError("the chat template is empty; pass a tokenizer_config.json with a 'chat_template' or disable it")
    if use_jinja is None:
        try:
            import jinja2  # noqa: F401

            use_jinja = True
        except ImportError:
            use_jinja = False
    if use_jinja:
        return _render_jinja(template, messages, bos_token, eos_token, add_generation_prompt)
    if _same_template(template, LLADA_CHAT_TEMPLATE):
        return render_llada_chat(messages, bos_token)
    raise ImportError(
        "this chat template is not LLaDA-Instruct's, and rendering other templates needs jinja2: pip install jinja2"
    )


def _render_jinja(template, messages, bos_token, eos_token, add_generation_prompt) -> str:
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        compiled = env.from_string(template)
        return compiled.render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                               add_generation_prompt=add_generation_prompt)
    except TemplateError as e:
        raise ValueError(f"the chat template failed to render: {e}") from None
