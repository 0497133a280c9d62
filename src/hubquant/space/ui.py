"""The gradio page of the Space: sign-in, model, hardware, destination, jobs.

Every Hub call made for a user (search, model summary, the job itself) uses the
OAuth token of that user's session and never a token of the Space. When no user
is signed in, the `HfApi` objects here get ``token=False``, which stops
huggingface_hub from falling back to ``HF_TOKEN`` or a cached login.
"""

import logging

import gradio as gr
from huggingface_hub import HfApi

from hubquant.errors import HubquantError, UsageError
from hubquant.space import views
from hubquant.space.config import SpaceConfig
from hubquant.space.identity import HubUser, UserDirectory
from hubquant.space.jobs import JobManager
from hubquant.space.picking import chosen_targets, hardware_choices, pick_targets, skipped_targets, target_choices
from hubquant.space.sources import describe_source, parse_model_input, search_models, source_text

log = logging.getLogger(__name__)

TITLE = "hubquant: quantize a model for your hardware"
INTRO = (
    "Pick a model from the Hub and the hardware you want to run it on. hubquant "
    "chooses backends and precisions for that hardware, converts and quantizes the "
    "model, checks every file against the original, and publishes each backend's "
    "files as a repo with a model card written from the measured numbers. "
    "The same choice on the command line is `hubquant run MODEL --for HARDWARE --push`."
)
REFRESH_SECONDS = 1.0
CSS = """
.hq-progress { display: flex; flex-direction: column; gap: 0.35rem; }
.hq-bar { display: flex; align-items: center; gap: 0.6rem; }
.hq-bar span { min-width: 14rem; font-size: 0.9rem; }
.hq-bar progress { flex: 1; height: 0.9rem; }
"""


class SpaceApp:
    """The Space's state shared by all sessions: configuration, users and jobs."""

    def __init__(self, config: SpaceConfig, manager: JobManager | None = None) -> None:
        self.config = config
        self.manager = manager or JobManager(config)
        self.users = UserDirectory(config.endpoint)

    # -- helpers -------------------------------------------------------------

    def api(self, token: str | None) -> HfApi:
        return HfApi(endpoint=self.config.endpoint, token=token or False)

    def user(self, oauth_token: gr.OAuthToken | None) -> HubUser | None:
        if oauth_token is None or not oauth_token.token:
            return None
        return self.users.user_for(oauth_token.token)

    # -- events ----------------------------------------------------------------

    def on_load(self, oauth_token: gr.OAuthToken | None):
        try:
            user = self.user(oauth_token)
        except HubquantError as error:
            return (f"**Error:** {error}", gr.update(choices=[], value=None), gr.update(choices=[], value=None))
        if user is None:
            return (views.SIGN_IN_NEEDED, gr.update(choices=[], value=None), gr.update(choices=[], value=None))
        jobs = self.manager.jobs_for(user.name)
        choices = views.job_choices(jobs)
        signed_in = f"Signed in as **{user.name}**. Jobs run with your account's access."
        return (
            signed_in,
            gr.update(choices=list(user.namespaces), value=user.name),
            gr.update(choices=choices, value=jobs[0].id if jobs else None),
        )

    def on_search(self, key_up: gr.KeyUpData, oauth_token: gr.OAuthToken | None):
        query = key_up.input_value or ""
        token = oauth_token.token if oauth_token is not None else None
        found = search_models(self.api(token), query)
        if not found:
            return gr.update()
        return gr.update(choices=found)

    def on_hardware(self, hardware: list[str]):
        return gr.update(value=pick_targets(hardware or []))

    def on_describe(self, model: str, targets: list[str], typed: str, hardware: list[str], namespace: str, repo_name: str, public: bool | None, oauth_token: gr.OAuthToken | None):
        """Describe the source and the planned releases; `public` None follows the source."""
        if not model:
            return "Pick a model to see what the Space found.", gr.update(), ""
        token = oauth_token.token if oauth_token is not None else None
        try:
            ref = parse_model_input(model, self.config.endpoint)
            chosen = chosen_targets(targets, typed) if targets or (typed or "").strip() else []
            summary = describe_source(
                self.api(token), ref, targets=chosen, namespace=namespace if token else None,
                public=public, repo_name=repo_name or None,
            )
        except HubquantError as error:
            return f"**Error:** {error}", gr.update(), ""
        text = views.summary_markdown(summary, skipped_targets=skipped_targets(hardware or []))
        if not token:
            text += "\n\nSign in to see the release repos that a run would create."
        effective_public = (not (summary.private or summary.gated)) if public is None else public
        return text, gr.update(value=effective_public), views.visibility_warning(summary, effective_public)

    def on_model_change(self, model, targets, typed, hardware, namespace, repo_name, oauth_token: gr.OAuthToken | None):
        # A new source resets visibility to the source's own.
        return self.on_describe(model, targets, typed, hardware, namespace, repo_name, None, oauth_token)

    def on_options_change(self, model, targets, typed, hardware, namespace, repo_name, public, oauth_token: gr.OAuthToken | None):
        return self.on_describe(model, targets, typed, hardware, namespace, repo_name, public, oauth_token)

    def on_run(self, model: str, targets: list[str], typed: str, hardware: list[str], namespace: str, repo_name: str, public: bool, max_file_gb: float, oauth_token: gr.OAuthToken | None):
        if oauth_token is None or not oauth_token.token:
            return views.SIGN_IN_NEEDED, gr.update()
        token = oauth_token.token
        try:
            user = self.users.user_for(token)
            ref = parse_model_input(model, self.config.endpoint)
            chosen = chosen_targets(targets, typed)
            if namespace not in user.namespaces:
                raise UsageError(
                    f"you cannot publish under {namespace!r}; choose one of {', '.join(user.namespaces)}"
                )
            job = self.manager.submit(
                owner=user.name,
                token=token,
                source=source_text(ref),
                targets=chosen,
                namespace=namespace,
                public=bool(public),
                repo_name=(repo_name or "").strip() or None,
                hardware=list(hardware or []),
                max_file_bytes=int(float(max_file_gb or 50) * 1000**3),
                source_bytes=lambda: self._source_bytes(token, ref),
            )
        except HubquantError as error:
            return f"**Not started:** {error}.", gr.update()
        jobs = self.manager.jobs_for(user.name)
        return (
            f"Started job {job.id}. It keeps running if you close this tab; reopen the Space to follow it.",
            gr.update(choices=views.job_choices(jobs), value=job.id),
        )

    def _source_bytes(self, token: str, ref) -> int:
        from hubquant.source import download_bytes, resolve_hub_source

        return download_bytes(resolve_hub_source(self.api(token), ref).files)

    def on_refresh(self, job_id: str | None, labels: list, oauth_token: gr.OAuthToken | None):
        try:
            user = self.user(oauth_token)
        except HubquantError:
            user = None
        job = self.manager.get(job_id, user.name) if user and job_id else None
        picker = gr.update()
        if user is not None:
            jobs = self.manager.jobs_for(user.name)
            # A tick sent before a job started carries no job id; showing the
            # newest job then also repairs a picker that such a tick emptied.
            if job is None and jobs:
                job = jobs[0]
            new_labels = views.job_choices(jobs)
            if new_labels != labels or (job is not None and job.id != job_id):
                picker = gr.update(choices=new_labels, value=job.id if job else None)
                labels = new_labels
        previews = views.card_previews(job)
        cards = "\n\n---\n\n".join(f"## Card of {repo_id}\n\n{card}" for repo_id, card in previews)
        return (
            views.job_heading(job),
            views.progress_html(job),
            views.status_rows(job),
            views.results_markdown(job),
            cards,
            views.log_text(job),
            picker,
            labels,
        )

    def on_cancel(self, job_id: str | None, oauth_token: gr.OAuthToken | None):
        try:
            user = self.user(oauth_token)
        except HubquantError as error:
            return f"**Error:** {error}"
        if user is None or not job_id:
            return "Nothing to cancel."
        if self.manager.cancel(job_id, user.name):
            return f"Cancelling job {job_id}."
        return f"Job {job_id} is not queued or running."

    # -- layout ----------------------------------------------------------------

    def build(self) -> gr.Blocks:
        hardware = hardware_choices()
        with gr.Blocks(title=TITLE) as demo:
            gr.Markdown(f"# {TITLE}\n\n{INTRO}")
            with gr.Row():
                gr.LoginButton(elem_id="login")
            signin = gr.Markdown(views.SIGN_IN_NEEDED, elem_id="signin-status")
            with gr.Row():
                with gr.Column(scale=3):
                    model = gr.Dropdown(
                        label="Model",
                        info="Type to search the Hub, or paste a model id or URL; add @revision for a branch, tag or commit.",
                        choices=[],
                        value=None,
                        allow_custom_value=True,
                        filterable=True,
                        elem_id="model",
                    )
                    hardware_box = gr.CheckboxGroup(
                        label="Hardware you want to run it on",
                        choices=[(choice.label, choice.key) for choice in hardware],
                        elem_id="hardware",
                    )
                    with gr.Accordion("What each kind of hardware gets", open=False):
                        gr.Markdown(views.hardware_markdown(hardware))
                    with gr.Accordion("Advanced: exact targets and options", open=False, elem_id="advanced"):
                        targets = gr.CheckboxGroup(
                            label="Targets (BACKEND:PRECISION), filled from the hardware above",
                            choices=target_choices(),
                            elem_id="targets",
                        )
                        typed_targets = gr.Textbox(
                            label="More targets, with options, separated by spaces or new lines",
                            placeholder="gguf:Q4_K_M:imatrix,output=Q8_0 onnx:int4-block-64 openvino:int4:group-size=64 mlx:4bit-g32",
                            elem_id="typed-targets",
                        )
                        gr.Markdown(views.TARGET_OPTIONS_HELP)
                        repo_name = gr.Textbox(label="Base name of the release repos (default: the source's name)", elem_id="repo-name")
                        max_file_gb = gr.Number(
                            label="gguf: largest single file in GB; larger files are split (the Hub's limit is 50)",
                            value=50, minimum=0.1, maximum=50, elem_id="max-file-gb",
                        )
                    namespace = gr.Dropdown(label="Publish under", choices=[], elem_id="namespace")
                    # Unticked until the source is known: a run started before the
                    # summary arrives must not publish a private source publicly.
                    public = gr.Checkbox(label="Public releases", value=False, info="Defaults to the source's visibility.", elem_id="public")
                    warning = gr.Markdown(elem_id="visibility-warning")
                    run = gr.Button("Quantize and publish", variant="primary", elem_id="run")
                    run_message = gr.Markdown(elem_id="run-message")
                with gr.Column(scale=2):
                    summary = gr.Markdown("Pick a model to see what the Space found.", elem_id="summary")

            gr.Markdown("## Your jobs")
            with gr.Row():
                job_picker = gr.Dropdown(label="Job", choices=[], scale=4, elem_id="job-picker")
                cancel = gr.Button("Cancel job", scale=1, elem_id="cancel")
            cancel_message = gr.Markdown()
            heading = gr.Markdown("No job selected.", elem_id="job-heading")
            progress = gr.HTML(elem_id="job-progress")
            status = gr.Dataframe(headers=views.STATUS_HEADERS, value=[], interactive=False, wrap=True, elem_id="job-status")
            results = gr.Markdown(elem_id="job-results")
            with gr.Accordion("Model cards", open=False, elem_id="cards-accordion"):
                cards = gr.Markdown(elem_id="job-cards")
            job_log = gr.Textbox(label="Log", lines=10, max_lines=20, autoscroll=True, interactive=False, elem_id="job-log")
            labels = gr.State([])
            timer = gr.Timer(REFRESH_SECONDS)

            describe_inputs = [model, targets, typed_targets, hardware_box, namespace, repo_name]
            describe_outputs = [summary, public, warning]
            demo.load(self.on_load, None, [signin, namespace, job_picker])
            model.key_up(self.on_search, None, model, trigger_mode="always_last", show_progress="hidden")
            model.change(self.on_model_change, describe_inputs, describe_outputs, trigger_mode="always_last")
            hardware_box.input(self.on_hardware, hardware_box, targets).then(
                self.on_options_change, [*describe_inputs, public], describe_outputs, trigger_mode="always_last"
            )
            for component in (targets, namespace):
                component.input(self.on_options_change, [*describe_inputs, public], describe_outputs, trigger_mode="always_last")
            for component in (repo_name, typed_targets):
                component.submit(self.on_options_change, [*describe_inputs, public], describe_outputs)
                component.blur(self.on_options_change, [*describe_inputs, public], describe_outputs)
            public.input(self.on_options_change, [*describe_inputs, public], describe_outputs)
            run.click(
                self.on_run,
                [model, targets, typed_targets, hardware_box, namespace, repo_name, public, max_file_gb],
                [run_message, job_picker],
                concurrency_limit=4,
            )
            refresh_outputs = [heading, progress, status, results, cards, job_log, job_picker, labels]
            timer.tick(self.on_refresh, [job_picker, labels], refresh_outputs, show_progress="hidden")
            job_picker.input(self.on_refresh, [job_picker, labels], refresh_outputs)
            cancel.click(self.on_cancel, job_picker, cancel_message)
        return demo


def theme() -> gr.themes.Base:
    """Return the page theme with system fonts, so browsers load no web fonts."""
    return gr.themes.Soft(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
    )


def launch(config: SpaceConfig, *, host: str = "0.0.0.0", port: int = 7860, manager: JobManager | None = None) -> None:
    """Build the page and serve it until the process is stopped."""
    app = SpaceApp(config, manager)
    demo = app.build()
    try:
        demo.queue(default_concurrency_limit=8).launch(
            server_name=host,
            server_port=port,
            css=CSS,
            theme=theme(),
            ssr_mode=False,
            show_error=True,
            footer_links=[],
        )
    finally:
        app.manager.close()

