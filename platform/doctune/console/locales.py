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
    # -- sweeps, models & deployments, playground, admin (pages/sweeps.py, models.py, playground.py, admin.py)
    "sweeps.job": {"en": "Job spec (YAML)", "zh": "任务规格（YAML）"},
    "sweeps.search_space": {"en": "Search space (YAML)", "zh": "搜索空间（YAML）"},
    "sweeps.launch": {"en": "Launch sweep", "zh": "启动超参搜索"},
    "sweeps.refresh": {"en": "Refresh", "zh": "刷新"},
    "sweeps.list": {"en": "Sweeps", "zh": "超参搜索"},
    "sweeps.sweep": {"en": "Sweep", "zh": "超参搜索"},
    "sweeps.leaderboard": {"en": "Leaderboard", "zh": "排行榜"},
    "sweeps.setting": {"en": "Hyperparameter", "zh": "超参数"},
    "sweeps.plot": {"en": "Hyperparameter vs dev metric", "zh": "超参数与验证指标"},
    "sweeps.endpoint": {"en": "Endpoint to promote to", "zh": "晋升到的端点"},
    "sweeps.force": {"en": "Force (even if not better)", "zh": "强制（即使不更好）"},
    "sweeps.promote": {"en": "Promote winner", "zh": "晋升最佳模型"},
    "models.refresh": {"en": "Refresh", "zh": "刷新"},
    "models.models": {"en": "Registered models", "zh": "已注册模型"},
    "models.model": {"en": "Model", "zh": "模型"},
    "models.name": {"en": "Endpoint name", "zh": "端点名称"},
    "models.deploy": {"en": "Deploy", "zh": "部署"},
    "models.deployments": {"en": "Deployments", "zh": "部署"},
    "models.deployment": {"en": "Deployment", "zh": "部署"},
    "models.revisions": {"en": "Revisions", "zh": "修订版本"},
    "models.rollback_revision": {"en": "Revision to roll back to (empty: the previous)", "zh": "回滚到的版本（留空：上一个）"},
    "models.rollback": {"en": "Roll back", "zh": "回滚"},
    "playground.deployment": {"en": "Deployment", "zh": "部署"},
    "playground.refresh": {"en": "Refresh", "zh": "刷新"},
    "playground.text": {"en": "Input", "zh": "输入"},
    "playground.explain": {"en": "Explain (classification: word attributions)", "zh": "解释（分类：词语归因）"},
    "playground.k": {"en": "k (retrieval)", "zh": "k（检索）"},
    "playground.run": {"en": "Run", "zh": "运行"},
    "playground.labels": {"en": "Labels", "zh": "标签"},
    "playground.highlighted": {"en": "Highlighted", "zh": "高亮"},
    "playground.fields": {"en": "Fields and relations", "zh": "字段与关系"},
    "playground.answer": {"en": "Answer", "zh": "回答"},
    "playground.ranked": {"en": "Ranked documents", "zh": "排序后的文档"},
    "admin.refresh": {"en": "Refresh", "zh": "刷新"},
    "admin.tenants_heading": {"en": "### Tenants, weights and quotas", "zh": "### 租户、权重与配额"},
    "admin.tenants": {"en": "Tenants", "zh": "租户"},
    "admin.quota_tenant": {"en": "Tenant", "zh": "租户"},
    "admin.unlimited": {"en": "Make unlimited", "zh": "设为不限"},
    "admin.save_quota": {"en": "Save quota", "zh": "保存配额"},
    "admin.keys_heading": {"en": "### API keys", "zh": "### API 密钥"},
    "admin.keys": {"en": "Keys", "zh": "密钥"},
    "admin.key_tenant": {"en": "Tenant", "zh": "租户"},
    "admin.key_role": {"en": "Role", "zh": "角色"},
    "admin.create_key": {"en": "Create key", "zh": "创建密钥"},
    "admin.new_key": {"en": "New key (shown once: copy it now)", "zh": "新密钥（只显示一次，请立即复制）"},
    "admin.key_id": {"en": "Key", "zh": "密钥"},
    "admin.revoke_key": {"en": "Revoke key", "zh": "吊销密钥"},
    "admin.queue_heading": {"en": "### Queue, in fair-share order", "zh": "### 队列（按公平份额排序）"},
    "admin.queue": {"en": "Queued jobs", "zh": "排队的任务"},
    "admin.cluster_heading": {"en": "### Cluster resources", "zh": "### 集群资源"},
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
