"""The console's languages: English (the source text) and Brazilian Portuguese.

A small message catalogue instead of gettext files: the texts are the English strings the
templates pass to `_()`, with `%(name)s` placeholders. The language is the session's choice
(the switch in the header), else the best match of the browser's Accept-Language, else
English. A text without a translation shows in English (a unit test keeps them complete).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import request, session

LANGUAGES: Mapping[str, str] = {"en": "English", "pt-BR": "Português"}
DEFAULT = "en"

PT_BR: Mapping[str, str] = {
    # navigation and sign-in
    "Fleet": "Frota",
    "Runbook": "Runbook",
    "Sign out": "Sair",
    "Sign in": "Entrar",
    "Token": "Token",
    "Use an Ultrabase Doctor API token or your Ultrabase manager token (JWT). Your role and "
    "the instances you may see come from it, as in the API.":
        "Use um token da API do Ultrabase Doctor ou o seu token do gerenciador Ultrabase "
        "(JWT). O seu papel e as instâncias que você pode ver vêm dele, como na API.",
    "That token is not accepted here.": "Esse token não é aceito aqui.",
    "Your session has ended; sign in again.": "Sua sessão terminou; entre novamente.",
    # errors
    "Error": "Erro",
    "Not done": "Não realizado",
    "Retry in %(wait)s s.": "Tente novamente em %(wait)s s.",
    "Follow the running operation": "Acompanhar a operação em andamento",
    "Back to the fleet": "Voltar à frota",
    "Instance not found.": "Instância não encontrada.",
    "Internal error; see the service log.": "Erro interno; veja o log do serviço.",
    # fleet
    "Docker could not be read: the instances' state is unknown.":
        "Não foi possível ler o Docker: o estado das instâncias é desconhecido.",
    "%(total)s instances": "%(total)s instâncias",
    "Status": "Status",
    "Owner": "Proprietário",
    "all": "todos",
    "Filter": "Filtrar",
    "Id": "Id",
    "Last diagnostic": "Último diagnóstico",
    "View last diagnostic": "Ver Último Diagnóstico",
    "View logs": "Ver Logs",
    "%(age)s ago": "há %(age)s",
    "none yet": "nenhum ainda",
    "Uptime": "Disponibilidade",
    "Root cause": "Causa raiz",
    "%(count)s issue(s); no single root cause.":
        "%(count)s problema(s); nenhuma causa raiz única.",
    "Run diagnostics now": "Executar Diagnóstico Agora",
    "History": "Histórico",
    "Safe restart": "Restart Seguro",
    "Logs": "Logs",
    "No instance to show.": "Nenhuma instância para mostrar.",
    # instance
    "Grafana dashboard": "Painel no Grafana",
    "Repair": "Reparo",
    "Restart": "Restart",
    "Settings": "Configurações",
    "Backups": "Backups",
    "Audit": "Auditoria",
    "An operation is running on this instance.": "Uma operação está em andamento nesta "
                                                 "instância.",
    "Follow it": "Acompanhar",
    "Repair…": "Reparar…",
    "Safe restart…": "Restart Seguro…",
    "A diagnostic is running…": "Um diagnóstico está em execução…",
    "No diagnostic yet.": "Nenhum diagnóstico ainda.",
    "Run one now.": "Execute um agora.",
    "took %(s)s": "levou %(s)s",
    "trigger": "origem",
    "Trigger": "Origem",
    "What to do": "O que fazer",
    "Chain of effects": "Cadeia de efeitos",
    "This explains:": "Isto explica:",
    "No single root cause: see the issues below.":
        "Nenhuma causa raiz única: veja os problemas abaixo.",
    "Recent events": "Eventos recentes",
    "Code": "Código",
    "Component": "Componente",
    "First seen": "Visto primeiro",
    "Last seen": "Visto por último",
    "Count": "Contagem",
    "Excerpt": "Trecho",
    "Checks": "Verificações",
    "Check": "Verificação",
    "Issues": "Problemas",
    "Time": "Hora",
    "repair action": "ação de reparo",
    "No issues.": "Nenhum problema.",
    "Diagnostic started; this page follows it.":
        "Diagnóstico iniciado; esta página o acompanha.",
    "A diagnostic of this instance is already running; this page follows it.":
        "Diagnóstico já em execução para esta instância; esta página o acompanha.",
    "Rate limited: one on-demand diagnostic per instance every %(window)s s. Retry in "
    "%(wait)s s; the last result is shown.":
        "Limite atingido: um diagnóstico sob demanda por instância a cada %(window)s s. "
        "Tente novamente em %(wait)s s; o último resultado é mostrado.",
    # history
    "Health over the last %(days)s day(s)": "Saúde nos últimos %(days)s dia(s)",
    "%(days)s day(s)": "%(days)s dia(s)",
    "Issues per diagnostic and health over time":
        "Problemas por diagnóstico e saúde ao longo do tempo",
    "No diagnostic in this period.": "Nenhum diagnóstico neste período.",
    "Bars: issues found by each diagnostic (green healthy, red unhealthy). Band: the health "
    "that held between diagnostics. Times in UTC.":
        "Barras: problemas encontrados em cada diagnóstico (verde saudável, vermelho não "
        "saudável). Faixa: a saúde entre diagnósticos. Horários em UTC.",
    "Health report": "Relatório de saúde",
    "Current state": "Estado atual",
    "%(s)s observed": "%(s)s observados",
    "Trend": "Tendência",
    "Diagnostics": "Diagnósticos",
    "Recoveries": "Recuperações",
    "Mean time to recovery": "Tempo médio de recuperação",
    "Most frequent issues": "Problemas mais frequentes",
    "No issues in this period.": "Nenhum problema neste período.",
    "Latest diagnostics": "Últimos diagnósticos",
    # logs
    "Services": "Serviços",
    "Service": "Serviço",
    "Level": "Nível",
    "Time range": "Período",
    "Show": "Mostrar",
    "Logs cannot be read by this process.": "Este processo não consegue ler os logs.",
    "%(n)s entries": "%(n)s entradas",
    "errors": "erros",
    "warnings": "avisos",
    "cut at the line limit": "cortado no limite de linhas",
    "Message": "Mensagem",
    "No entries at this level in this range.": "Nenhuma entrada neste nível e período.",
    # restart
    "What happens: the instance's files are backed up and its state recorded; its alerts "
    "are silenced in Alertmanager while it runs; every component is stopped in reverse "
    "dependency order and started again in dependency order; the data directories are "
    "checked; then the doctor waits for health and compares with the state before "
    "(containers, images, row counts). If a step fails, what was running is started again "
    "and the operation fails naming the step. Nothing is removed.":
        "O que acontece: os arquivos da instância são copiados e o seu estado registrado; "
        "os alertas dela são silenciados no Alertmanager durante a operação; cada "
        "componente é parado na ordem inversa das dependências e iniciado de novo na ordem "
        "das dependências; os diretórios de dados são verificados; então o doctor espera a "
        "saúde e compara com o estado anterior (contêineres, imagens, contagens de linhas). "
        "Se um passo falhar, o que estava rodando é iniciado de novo e a operação falha "
        "dizendo o passo. Nada é removido.",
    "Components, in start order:": "Componentes, na ordem de início:",
    "Restart the whole instance safely": "Reiniciar a instância inteira com segurança",
    "Restart one component": "Reiniciar um componente",
    "Only the chosen component is stopped and started (with the components that depend on "
    "it, if you tick the box), then its health is awaited.":
        "Só o componente escolhido é parado e iniciado (com os componentes que dependem "
        "dele, se você marcar a caixa), e então a sua saúde é aguardada.",
    "with the components that depend on it": "com os componentes que dependem dele",
    "Restart this component": "Reiniciar este componente",
    # repair
    "Repair plan": "Plano de reparo",
    "From the diagnostic of %(when)s.": "Do diagnóstico de %(when)s.",
    "Running the repair diagnoses again first and plans against what it finds.":
        "Executar o reparo faz um novo diagnóstico antes e planeja sobre o que encontrar.",
    "for": "para",
    "verified by": "verificado por",
    "needs confirmation: client apps must be updated afterwards":
        "exige confirmação: os apps clientes precisam ser atualizados depois",
    "Expected to clear as well": "Devem se resolver também",
    "explained by": "explicado por",
    "What happens: each action is backed up, carried out and verified by re-running its "
    "checks; the first that fails is rolled back and ends the repair. Every step shows on "
    "the next page.":
        "O que acontece: cada ação tem backup, é executada e verificada repetindo as suas "
        "verificações; a primeira que falhar é revertida e encerra o reparo. Cada passo "
        "aparece na próxima página.",
    "I confirm the actions that need it (new API keys: client apps must be updated)":
        "Confirmo as ações que exigem confirmação (novas chaves de API: os apps clientes "
        "precisam ser atualizados)",
    "Run the repair": "Executar o reparo",
    "Nothing to repair automatically.": "Nada a reparar automaticamente.",
    "For a human": "Para uma pessoa",
    # config
    "Not editable": "Não editável",
    "What happens: the files are backed up, every file that carries a setting is changed, "
    "the services that read it are recreated and the instance's health is checked. If it is "
    "not healthy the files are restored, the services recreated again, and the operation "
    "ends as rolled back. Leave a field empty to keep it.":
        "O que acontece: os arquivos são copiados, cada arquivo que tem a configuração é "
        "alterado, os serviços que a leem são recriados e a saúde da instância é "
        "verificada. Se não estiver saudável, os arquivos são restaurados, os serviços "
        "recriados de novo e a operação termina revertida. Deixe um campo vazio para "
        "mantê-lo.",
    "Setting": "Configuração",
    "Current value": "Valor atual",
    "New value": "Novo valor",
    "Recreates": "Recria",
    "files disagree": "arquivos divergem",
    "unchanged": "sem mudança",
    "Apply changes": "Aplicar mudanças",
    # backups
    "Reason": "Motivo",
    "with a database dump": "com dump do banco de dados",
    "Take a backup": "Fazer backup",
    "Backup": "Backup",
    "Taken": "Feito em",
    "Files": "Arquivos",
    "Size": "Tamanho",
    "Database": "Banco de dados",
    "yes": "sim",
    "no": "não",
    "Restore…": "Restaurar…",
    "No backup yet.": "Nenhum backup ainda.",
    "Restore backup %(id)s": "Restaurar o backup %(id)s",
    "Taken %(when)s (%(reason)s): %(files)s.": "Feito em %(when)s (%(reason)s): %(files)s.",
    "What happens: the backup's checksums are verified, the current files are backed up, "
    "the backup's files are put back and the services whose settings changed are "
    "recreated; then health is checked. If the instance is not healthy afterwards, the "
    "state before the restore is put back and the operation ends as rolled back. A "
    "database dump in the backup is not loaded.":
        "O que acontece: as somas de verificação do backup são conferidas, os arquivos "
        "atuais são copiados, os arquivos do backup são repostos e os serviços cujas "
        "configurações mudaram são recriados; então a saúde é verificada. Se a instância "
        "não estiver saudável, o estado anterior à restauração é reposto e a operação "
        "termina revertida. Um dump do banco no backup não é carregado.",
    "Restore this backup": "Restaurar este backup",
    "Cancel": "Cancelar",
    # audit
    "Audit trail": "Trilha de auditoria",
    "Who": "Quem",
    "Action": "Ação",
    "Result": "Resultado",
    "Duration": "Duração",
    "Nothing recorded yet.": "Nada registrado ainda.",
    # operations
    "started %(when)s by %(who)s": "iniciada em %(when)s por %(who)s",
    "Running; the steps below follow it live.":
        "Em andamento; os passos abaixo a acompanham ao vivo.",
    "Rolled back: whatever the operation had changed was undone.":
        "Revertida: tudo o que a operação havia mudado foi desfeito.",
    "Failed.": "Falhou.",
    "Done.": "Concluída.",
    "step": "passo",
    "Step": "Passo",
    "Detail": "Detalhe",
    "No step yet.": "Nenhum passo ainda.",
    "Back to the instance": "Voltar à instância",
    # runbook
    "Every issue code the doctor reports, with what to do. The same text as "
    "docs/runbook.md, from the issue catalogue.":
        "Cada código de problema que o doctor informa, com o que fazer. O mesmo texto de "
        "docs/runbook.md, a partir do catálogo de problemas.",
    # words shown from data: statuses, roles, severities, triggers, kinds, trends, levels
    "healthy": "saudável",
    "unhealthy": "não saudável",
    "unknown": "desconhecido",
    "viewer": "leitor",
    "operator": "operador",
    "admin": "administrador",
    "critical": "crítico",
    "warning": "aviso",
    "info": "info",
    "ok": "ok",
    "degraded": "degradado",
    "failed": "falhou",
    "skipped": "ignorado",
    "pending": "pendente",
    "running": "em andamento",
    "succeeded": "concluída",
    "rolled_back": "revertida",
    "conflict": "conflito",
    "refused": "recusado",
    "started": "iniciado",
    "ignored": "ignorado",
    "on_demand": "sob demanda",
    "scheduled": "agendado",
    "operation": "operação",
    "safe_restart": "Restart Seguro",
    "restart_service": "Restart de componente",
    "repair": "Reparo",
    "config_edit": "Mudança de configuração",
    "backup": "Backup",
    "restore": "Restauração",
    "improving": "melhorando",
    "stable": "estável",
    "degrading": "piorando",
    "insufficient_data": "dados insuficientes",
    "debug": "debug",
    "error": "erro",
    "fatal": "fatal",
}

# Words that come from data (operation kinds, statuses) read better spelled out.
EN: Mapping[str, str] = {
    "safe_restart": "Safe restart", "restart_service": "Component restart",
    "repair": "Repair", "config_edit": "Settings change", "backup": "Backup",
    "restore": "Restore", "rolled_back": "rolled back", "on_demand": "on demand",
    "insufficient_data": "insufficient data",
}

CATALOGUES: Mapping[str, Mapping[str, str]] = {"en": EN, "pt-BR": PT_BR}


def language() -> str:
    """The request's language: the session's choice, else the browser's, else English."""
    chosen = session.get("lang")
    if isinstance(chosen, str) and chosen in LANGUAGES:
        return chosen
    best = request.accept_languages.best_match(["en", "pt-BR", "pt"], default=DEFAULT)
    return "pt-BR" if best in ("pt", "pt-BR") else DEFAULT


def translate(text: str, lang: str, **values: Any) -> str:
    """The text in the language (English when missing), with its placeholders filled."""
    found = CATALOGUES.get(lang, {}).get(text, text)
    return found % values if values else found


def translator(lang: str) -> Callable[..., str]:
    """`_(text, **values)` for templates, bound to a language."""

    def gettext(text: str, **values: Any) -> str:
        return translate(text, lang, **values)

    return gettext
