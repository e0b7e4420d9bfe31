"""`tailor ui`: the whole customization in a browser (data, model, training with live curves, evaluation, chat,
shipping), for people who do not write YAML.

app.py        the FastAPI app: guards (host, token, origin), shared routes, Jinja2 templates
pages_*.py    the pages: Start/Data/Model, Train and runs, Evaluate/Chat/Ship
forms.py      forms generated from the recipe schema and validated by it
jobs.py       the job table (SQLite) and runner; worker.py runs one job in its own process
roots.py      file access confined to configured roots; uploads
project.py    the workspace (project.json and its folders), model summaries, metrics
machine.py    CPU, memory and GPUs, read without torch
tasks.py      stage functions whose results the pages read as JSON (data inspection)
server.py     `tailor ui`: binds, makes the access token, runs uvicorn
static/, templates/  vendored htmx and uPlot (licenses beside them), the pages' HTML, CSS and JS
"""
