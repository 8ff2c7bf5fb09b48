"""The console's UI text in English and Chinese, keyed by element name ``"<tab>.<name>"``
(:meth:`doctune.console.context.Console.add`). The language switch at the top relabels every
registered element live; an element with no entry here keeps the text it was built with."""

from __future__ import annotations

LANGUAGES = {"en": "English", "zh": "中文"}

LOCALES: dict[str, dict[str, str]] = {
    "top.api_key": {"en": "API key", "zh": "API 密钥"},
    "top.sign_in": {"en": "Sign in", "zh": "登录"},
    "top.sign_out": {"en": "Sign out", "zh": "退出"},
    "top.language": {"en": "Language", "zh": "语言"},
}


def text(name: str, lang: str) -> str | None:
    """The element's text in ``lang`` (falling back to English), or None when it has no entry."""
    entry = LOCALES.get(name)
    return None if entry is None else entry.get(lang) or entry.get("en")


# -- datasets, new job, jobs (pages/datasets.py, new_job.py, jobs.py)
LOCALES.update({
    # Datasets
    "datasets.task": {"en": "Task", "zh": "任务"},
    "datasets.name": {"en": "Name", "zh": "名称"},
    "datasets.file": {"en": "JSONL or CSV file", "zh": "JSONL 或 CSV 文件"},
    "datasets.upload": {"en": "Upload", "zh": "上传"},
    "datasets.errors": {"en": "Validation errors", "zh": "校验错误"},
    "datasets.preview": {"en": "Preview (first rows)", "zh": "预览（前几行）"},
    "datasets.balance": {"en": "Class balance (train split)", "zh": "类别分布（训练集）"},
    "datasets.list": {"en": "Your datasets", "zh": "我的数据集"},
    "datasets.refresh": {"en": "Refresh", "zh": "刷新"},
    "datasets.pick": {"en": "Dataset", "zh": "数据集"},
    "datasets.delete": {"en": "Delete", "zh": "删除"},
    # New job (the generated form's inputs are named by their JobSpec path)
    "new_job.task": {"en": "task", "zh": "任务 (task)"},
    "new_job.base_model": {"en": "base_model", "zh": "基础模型 (base_model)"},
    "new_job.dataset.id": {"en": "id", "zh": "数据集 (dataset.id)"},
    "new_job.name": {"en": "name", "zh": "名称 (name)"},
    "new_job.tuning.method": {"en": "method", "zh": "微调方法 (method)"},
    "new_job.deepspeed.zero_stage": {"en": "zero_stage", "zh": "ZeRO 阶段 (zero_stage)"},
    "new_job.deepspeed.offload_optimizer": {"en": "offload_optimizer", "zh": "优化器卸载到 CPU (offload_optimizer)"},
    "new_job.deepspeed.offload_params": {"en": "offload_params", "zh": "参数卸载到 CPU (offload_params)"},
    "new_job.micro_batch_size": {"en": "micro_batch_size", "zh": "微批大小 (micro_batch_size)"},
    "new_job.gradient_accumulation_steps": {"en": "gradient_accumulation_steps", "zh": "梯度累积步数 (gradient_accumulation_steps)"},
    "new_job.epochs": {"en": "epochs", "zh": "训练轮数 (epochs)"},
    "new_job.max_steps": {"en": "max_steps", "zh": "最大步数 (max_steps)"},
    "new_job.learning_rate": {"en": "learning_rate", "zh": "学习率 (learning_rate)"},
    "new_job.early_stopping.enabled": {"en": "use early_stopping", "zh": "启用早停 (early_stopping)"},
    "new_job.plan": {"en": "Plan", "zh": "预估计划"},
    "new_job.submit": {"en": "Submit", "zh": "提交"},
    "new_job.commands": {"en": "Run it from a terminal", "zh": "在终端中运行"},
    # Jobs
    "jobs.usage": {"en": "Usage and quotas", "zh": "用量与配额"},
    "jobs.list": {"en": "Jobs", "zh": "任务列表"},
    "jobs.refresh": {"en": "Refresh", "zh": "刷新"},
    "jobs.pick": {"en": "Job", "zh": "任务"},
    "jobs.cancel": {"en": "Cancel", "zh": "取消"},
    "jobs.pause": {"en": "Pause", "zh": "暂停"},
    "jobs.resume": {"en": "Resume", "zh": "恢复"},
    "jobs.loss": {"en": "Train loss", "zh": "训练损失"},
    "jobs.dev": {"en": "Dev metrics", "zh": "验证集指标"},
    "jobs.report": {"en": "Report: baseline beside fine-tuned (test split)", "zh": "报告：基线与微调后对比（测试集）"},
    "jobs.per_class": {"en": "Per class / per type", "zh": "按类别 / 按类型"},
    "jobs.confusion": {"en": "Confusion matrix (rows: gold, columns: predicted)", "zh": "混淆矩阵（行：真实，列：预测）"},
    "jobs.events": {"en": "Events", "zh": "事件"},
    "jobs.logs": {"en": "Log tail", "zh": "日志末尾"},
})
