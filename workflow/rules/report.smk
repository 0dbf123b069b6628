# Report: results/report/index.html, one self-contained file (figures and styles inline).


rule report:
    input:
        files=report_inputs,
        template=REPORT_TEMPLATE,
    output:
        report(
            "results/report/index.html",
            caption="../report/index.rst",
            category="Report",
        ),
    log:
        "logs/report/report.log",
    benchmark:
        "logs/benchmarks/report/report.tsv"
    conda:
        "../../envs/evaluate.yaml"
    params:
        layout=report_layout,
        config=config,
    script:
        "../../scripts/report.py"
