"""The Gradio page of ``seesr ui`` (issue 8): layout and event wiring over :class:`UIController`.

Improves on the official demo (spec §7.1, §9 item 10): the same pipeline as the CLI, editable DAPE tags, every
CLI knob honoured, a before/after slider, per-step progress, cancel, downloads of the image and its sidecar JSON,
one model job at a time, and failures shown as one line in the page — never a black image or a traceback.
Gradio is imported inside :func:`build_app`, so ``import seesr.ui.app`` stays light.
"""

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from seesr.config import SamplingConfig, TilingConfig
from seesr.ui.controller import (
    PRESETS,
    WEIGHTS_HELP,
    Cancelled,
    InputImage,
    UIController,
    make_configs,
    preset_knobs,
)

if TYPE_CHECKING:  # pragma: no cover
    import gradio as gr

# No `from __future__ import annotations` here: Gradio reads the handlers' annotations at runtime to inject
# gr.Request and gr.Progress, and string annotations naming the locally imported `gr` would not resolve.

logger = logging.getLogger(__name__)

CSS = """
#seesr-status .prose, #seesr-status p { font-size: 0.95rem; }
#seesr-weights-error { border: 2px solid #d33; border-radius: 8px; padding: 0.5rem 1rem; }
"""


def _msg(kind: str, text: str) -> str:
    # Plain words rather than emoji: they render without an emoji font and read well in screen readers.
    icon = {"ok": "", "info": "", "error": "**Error:** "}[kind]
    # Escape HTML in user-derived text (file names, exception messages): the status box renders Markdown.
    safe = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"{icon}{safe}"


def build_app(
    pipeline: Any | Callable[[], Any] | None,
    *,
    load_error: str | None = None,
    examples: Sequence[str | os.PathLike[str]] = (),
    output_dir: str | os.PathLike[str] | None = None,
    max_input_pixels: int | None = None,
    max_output_pixels: int | None = None,
    sampling_defaults: SamplingConfig | None = None,
    default_preset: str = "default",
    dtype_requested: str = "auto",
    max_memory: int | None = None,
    title: str = "SeeSR — semantics-aware real-world super-resolution",
) -> "gr.Blocks":
    """Build the page (not launched); start it with :func:`serve`.

    Args:
        pipeline: a loaded :class:`SeeSRPipeline` (or a stand-in with the same ``extract_tags``/``__call__``),
            a zero-argument factory returning one, or ``None`` for the "weights missing" page.
        load_error: why there is no pipeline (shown in the page) when ``pipeline`` is ``None``.
        examples: image files offered as examples.
        output_dir: where results are written (default: a fresh temporary folder).
        max_input_pixels: pixel cap of an upload, checked before decoding (default: seesr.io's).
        max_output_pixels: pixel cap of a result, checked before any model work (default: seesr.io's).
        sampling_defaults: initial knob values and every setting without a knob (e.g. ``process_size``).
        default_preset: the preset selected when the page opens (one of ``seesr upscale --preset``'s).
        dtype_requested: the ``--dtype`` the weights were loaded with (recorded in sidecars, as the CLI does).
        max_memory: memory budget in bytes for the run's plan (default: the CLI's).

    Returns:
        A ``gradio.Blocks`` with its queue configured for one job at a time (start it with :func:`serve`). The
        controller is attached as ``app.seesr_controller``.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    ctl = UIController(
        pipeline,
        load_error=load_error,
        output_dir=output_dir,
        max_input_pixels=max_input_pixels,
        max_output_pixels=max_output_pixels,
        dtype_requested=dtype_requested,
        max_memory=max_memory,
    )
    if default_preset not in PRESETS:
        raise ValueError(f"default_preset must be one of {', '.join(PRESETS)}; got {default_preset!r}")
    defaults = sampling_defaults or SamplingConfig()
    steps0, guidance0 = preset_knobs(default_preset, defaults)
    tiling_defaults = TilingConfig()

    def on_file(file: Any, request: gr.Request) -> tuple[Any, ...]:
        """Decode the upload and tag it; returns (state, preview, tags, status, slider, files, prompt).

        A new upload clears the previous result so that it cannot be mistaken for this image's.
        """
        cleared = (None, None, "")
        no_tags = gr.update(choices=[], value=[])
        if file is None:
            return (None, None, no_tags, _msg("info", "Upload an image to start."), *cleared)
        path = str(file if isinstance(file, (str, os.PathLike)) else getattr(file, "name", file))
        try:
            image = ctl.load(path)
        except (ValueError, FileNotFoundError, OSError) as err:
            # Name the file as the user knows it, not by Gradio's temporary upload path.
            text = str(err).replace(path, os.path.basename(path))
            return (None, None, no_tags, _msg("error", f"Cannot use this file: {text}"), *cleared)
        preview = image.preview
        w, h = image.size
        if not ctl.ready:
            return (image, preview, no_tags, _msg("error", ctl.load_error or WEIGHTS_HELP), *cleared)
        try:
            tags = ctl.extract_tags(image)
        except RuntimeError as err:
            return (image, preview, no_tags, _msg("error", str(err)), *cleared)
        except Exception as err:  # noqa: BLE001 - shown as one line; the traceback goes to the log
            logger.exception("tag extraction failed for %s", image.name)
            return (image, preview, no_tags, _msg("error", f"Tagging failed: {err}"), *cleared)
        status = (
            f"Loaded {image.name} ({w}x{h}). DAPE found {len(tags)} tag(s); edit them, then press Upscale."
        )
        try:  # the plan of the page's start settings, as `seesr upscale --plan` prints it
            plan = ctl.plan(image, defaults, tiling_defaults)
            if plan is not None:
                status += f" Plan: {plan.describe()}."
                hint = ctl.precision_hint(plan)
                if hint:
                    status += f" Note: {hint}."
        except ValueError as err:
            status += f" Warning: {err}"
        notes = image.warnings
        if notes:
            status += " Warning: " + "; ".join(notes)
        return (image, preview, gr.update(choices=tags, value=tags), _msg("ok", status), *cleared)

    def on_reset_tags(image: InputImage | None) -> Any:
        if image is None:
            return gr.update(choices=[], value=[])
        return gr.update(choices=image.auto_tags, value=list(image.auto_tags))

    def on_preset(preset: str) -> tuple[Any, Any]:
        steps_v, guidance_v = preset_knobs(preset, defaults)
        return gr.update(value=steps_v), gr.update(value=guidance_v)

    def on_run(
        image: InputImage | None,
        tags: list[str] | None,
        preset: str,
        steps: float,
        guidance: float,
        seed: float,
        scale: float,
        color_fix: str,
        tile_size: float,
        prompt: str,
        negative_prompt: str,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's documented way to get a progress bar
    ) -> tuple[Any, ...]:
        """Run the pipeline; returns (slider, files, prompt, status)."""
        nothing = (None, None, "")
        if image is None:
            return (*nothing, _msg("error", "Upload an image first (or pick an example)."))
        if not ctl.ready:
            return (*nothing, _msg("error", ctl.load_error or WEIGHTS_HELP))
        try:
            sampling, tiling = make_configs(
                preset=preset,
                steps=steps,
                guidance=guidance,
                seed=seed,
                scale=scale,
                color_fix=color_fix,
                tile_size=tile_size,
                prompt=prompt,
                negative_prompt=negative_prompt,
                base=defaults,
            )
            progress(0.0, desc="starting")
            out = ctl.run(
                image,
                tags=tags,
                sampling=sampling,
                tiling=tiling,
                preset=preset,
                progress=lambda s, t: progress((s, t), desc="denoising", unit="steps"),
                session=_session(request),
            )
        except Cancelled:
            return (*nothing, _msg("info", "Cancelled."))
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            return (*nothing, _msg("error", str(err)))
        except Exception as err:  # noqa: BLE001 - one line in the page; the traceback goes to the log
            logger.exception("run failed for %s", image.name)
            return (*nothing, _msg("error", f"The run failed ({type(err).__name__}): {err}"))
        h, w = out.after.shape[:2]
        status = f"Done in {out.seconds:.1f} s: {w}x{h}, seed {sampling.seed}, {len(out.tags)} tag(s)."
        files = [str(out.image_path), str(out.sidecar_path)]
        return (out.before, out.after), files, out.prompt, _msg("ok", status)

    def on_cancel(request: gr.Request) -> str:
        running = ctl.cancel(_session(request))
        return _msg("info", "Cancelling after the current step…" if running else "Nothing is running.")

    # delete_cache: Gradio's copies of uploads and results older than a day go, checked hourly (a long-running
    # local app would otherwise fill the disk with large PNGs).
    with gr.Blocks(title="SeeSR", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown(f"## {title}\nUpload a low-resolution photo, check the tags, press **Upscale**.")
        if not ctl.ready:
            gr.Markdown(_msg("error", ctl.load_error or WEIGHTS_HELP), elem_id="seesr-weights-error")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(
                    label="Input image", file_count="single", type="filepath", elem_id="seesr-input"
                )
                preview = gr.Image(
                    label="Input (as decoded)", interactive=False, height=160, elem_id="seesr-preview"
                )
                tags_box = gr.Dropdown(
                    label="Tags from DAPE (remove with ×, type a tag and press Enter to add)",
                    choices=[],
                    value=[],
                    multiselect=True,
                    allow_custom_value=True,
                    interactive=True,
                    elem_id="seesr-tags",
                )
                reset_tags = gr.Button("Reset tags to DAPE's", size="sm", elem_id="seesr-reset-tags")
                with gr.Row():
                    run_btn = gr.Button(
                        "Upscale", variant="primary", interactive=ctl.ready, elem_id="seesr-run"
                    )
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="seesr-cancel")
                with gr.Accordion("Settings", open=True):
                    preset = gr.Radio(
                        list(PRESETS),
                        value=default_preset,
                        label="Preset (same as seesr upscale --preset)",
                        info="faithful: every official quirk · turbo: 2 steps, no CFG (start with --turbo for "
                        "the sd-turbo UNet) · no-lre / hard-only / soft-only / no-dape: the paper's ablations",
                        elem_id="seesr-preset",
                    )
                    with gr.Row():
                        steps = gr.Slider(
                            1,
                            100,
                            value=steps0,
                            step=1,
                            label="Steps",
                            elem_id="seesr-steps",
                        )
                        guidance = gr.Slider(
                            1.0,
                            10.0,
                            value=guidance0,
                            step=0.1,
                            label="Guidance (CFG)",
                            elem_id="seesr-guidance",
                        )
                    with gr.Row():
                        seed = gr.Number(
                            value=defaults.seed, precision=0, minimum=0, label="Seed", elem_id="seesr-seed"
                        )
                        scale = gr.Slider(
                            1.0, 8.0, value=defaults.upscale, step=0.5, label="Scale", elem_id="seesr-scale"
                        )
                    color_fix = gr.Radio(
                        ["adain", "wavelet", "none"],
                        value=defaults.color_fix,
                        label="Colour fix",
                        elem_id="seesr-color-fix",
                    )
                    tile = gr.Slider(
                        256,
                        2048,
                        value=tiling_defaults.latent_tile_size * 8,
                        step=64,
                        label="Tile size (image px, as --tile-size)",
                        elem_id="seesr-tile",
                    )
                    prompt = gr.Textbox(
                        label="Prompt (added after the tags)", value=defaults.prompt, elem_id="seesr-prompt"
                    )
                    negative = gr.Textbox(
                        label="Negative prompt", value=defaults.negative_prompt, elem_id="seesr-negative"
                    )
            with gr.Column(scale=2):
                status = gr.Markdown(
                    _msg("info", "Upload an image to start.") if ctl.ready else "", elem_id="seesr-status"
                )
                slider = gr.ImageSlider(
                    label="Before / after",
                    format="png",
                    interactive=False,
                    max_height=720,
                    elem_id="seesr-result",
                )
                files = gr.File(
                    label="Download (image + sidecar JSON)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="seesr-files",
                )
                used_prompt = gr.Textbox(label="Prompt used", interactive=False, elem_id="seesr-used-prompt")
        if examples:
            gr.Examples(examples=[[str(p)] for p in examples], inputs=[upload], label="Examples")

        # Tagging and running share one concurrency slot: one model job at a time across all users.
        upload.change(
            on_file,
            inputs=[upload],
            outputs=[state, preview, tags_box, status, slider, files, used_prompt],
            concurrency_id="model",
            concurrency_limit=1,
            show_progress="minimal",
        )
        reset_tags.click(on_reset_tags, inputs=[state], outputs=[tags_box], queue=False)
        preset.change(on_preset, inputs=[preset], outputs=[steps, guidance], queue=False)
        run_event = run_btn.click(
            on_run,
            inputs=[state, tags_box, preset, steps, guidance, seed, scale, color_fix, tile, prompt, negative],
            outputs=[slider, files, used_prompt, status],
            concurrency_id="model",
            concurrency_limit=1,
        )
        # The cancel handler itself bypasses the queue (it must not wait behind the job it cancels); the pipeline
        # stops at its next step callback.
        cancel_btn.click(on_cancel, inputs=None, outputs=[status], queue=False, cancels=[run_event])

    app.queue(default_concurrency_limit=1, max_size=16)
    app.seesr_controller = ctl  # type: ignore[attr-defined]
    return app


def _session(request: Any) -> str:
    return str(getattr(request, "session_hash", "") or "")


def serve(
    app: "gr.Blocks",
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    block: bool = True,
    max_file_size: str | int | None = "200mb",
) -> str:
    """Launch ``app`` (from :func:`build_app`) and return its local URL.

    Binds to ``host`` (this machine only by default); a public Gradio share link only with ``share=True``.
    Server-side rendering (a Node process) is off and the footer links are hidden; the page loads nothing from
    outside the local server. ``block=False`` returns at once (tests, notebooks); close with ``app.close()``.
    """
    _, url, _ = app.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        ssr_mode=False,
        css=CSS,
        max_file_size=max_file_size,
        footer_links=[],
        quiet=not block,
    )
    return url
