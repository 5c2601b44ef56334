"""rarejax as a PhEval runner: a rarejax method ranks the diseases of PhEval's phenopackets.

  pheval run --runner rarejaxphevalrunner --input-dir experiments/pheval/resnik \\
      --testdata-dir CORPUS --output-dir OUT          # CORPUS/phenopackets/*.json

`options` reads the runner's settings (the `tool_specific_configuration_options` of the input
directory's config.yaml) and turns them into a `rarejax evaluate` command line; `results` reads
the ranked lists that command writes (cases.tsv) back per phenopacket file; `runner` is the
PhEval plugin itself (it needs the `pheval` extra: `pip install 'rarejax[pheval]'`), registered
under PhEval's `pheval.plugins` entry point group.
"""
