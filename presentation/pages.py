"""The house's HTML pages (the run report, the model card): one Jinja2 set-up and one stylesheet,
`style.css`, which every page's template includes."""

import os
from typing import Optional

import jinja2

STYLE_DIR = os.path.dirname(os.path.abspath(__file__))


def number(value: Optional[float]) -> str:
  """A metric as a page shows it: three decimals, a dash when there is none."""
  return '—' if value is None or value != value else f'{float(value):.3f}'


def environment(template_dir: str) -> jinja2.Environment:
  """Templates from `template_dir`, autoescaped (no file name can break a page), refusing an
  undefined value instead of printing nothing, with the `number` filter and `style.css`."""
  pages = jinja2.Environment(
      loader=jinja2.FileSystemLoader([template_dir, STYLE_DIR]), autoescape=True,
      trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
  pages.filters['number'] = number
  return pages
