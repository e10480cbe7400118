"""History import: `python -m analytics import FILE...` (see cli.py).

formats.py reads the files (NDJSON or CSV, gzip or not) and says where each row ends;
mapping.py turns a row of our export format or of an Umami `website_event` export into an
event row, or a reject naming the field; checkpoint.py keeps each file's progress in the
database, committed with the rows it covers; cli.py runs the load and then rebuilds the
rollups of the days it touched.
"""
