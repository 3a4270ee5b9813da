"""`python -m wave_deploy.reports > docs/report-schema.md`: the schemas of the report files, generated."""

from wave_deploy.reports.schema import schema_markdown

print(schema_markdown(), end="")
