"""The metric's Gradio widget, for a Hugging Face Space holding this folder (evaluate's community layout)."""

from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget

launch_gradio_widget(evaluate.load(str(Path(__file__).resolve().parent)))
