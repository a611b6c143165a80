"""The phase-diagram explorer (``meanfield explore``): a Panel app in the browser, the same
components in a Jupyter cell, and a self-contained static page of a stored sweep.

Modules, one job each: ``compute`` (values, from the public API only), ``views`` (Bokeh
figures), ``app`` (the Panel layout and its worker thread), ``export`` (download buttons),
``static`` (the HTML page), ``command`` (the CLI subcommand).  Panel and Bokeh are the
optional extra ``meanfield[explore]``; nothing here is imported by ``import meanfield``.
"""
