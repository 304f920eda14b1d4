"""``[kubernetes]`` of the bundle's settings file (see :mod:`appserver.bundle.settings`): the pod,
its Service, Ingress, PodDisruptionBudget and HorizontalPodAutoscaler, and the shutdown timings.

:mod:`appserver.bundle.kubernetes` turns these into the values the manifests print (computed
once); :mod:`appserver.bundle.crosscheck_kubernetes` checks them against the other layers
(docs/kubernetes.md).  Every default renders a working deployment, so a settings file without a
``[kubernetes]`` table still renders ``deploy/kubernetes/``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from appserver.bundle.values import HOSTNAME, Size, Strict

# RFC 1123 label (namespaces) and RFC 1035 label (Services, which the Deployment's name feeds).
DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_1035 = r"[a-z]([-a-z0-9]{0,40}[a-z0-9])?"  # short: the ConfigMap adds "-config-<hash>"
# A percentage ("25%") or a count, as Kubernetes' IntOrString fields take them.
PERCENT = re.compile(r"(100|[1-9]?[0-9])%")
# Annotation keys: an optional DNS-subdomain prefix and a name (Kubernetes' qualified names).
ANNOTATION_KEY = r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"


class ContainerResources(BaseModel):
    model_config = Strict

    cpu_request: float | None = Field(
        None, gt=0, le=1024, description="CPU cores the scheduler reserves (e.g. 0.25); needed "
        "by the autoscaler, which measures usage against it; unset: none")
    memory_request: Size | None = Field(
        None, ge=1 << 22, description="memory the scheduler reserves (e.g. 256m, at least 4m); "
        "unset: none")
    cpu_limit: float | None = Field(
        None, gt=0, le=1024, description="CPU limit in cores; unset: the compose limit of the "
        "same container (compose.app_cpus or compose.nginx_cpus), else none")
    memory_limit: Size | None = Field(
        None, ge=1 << 22, description="memory limit (e.g. 512m); unset: the compose limit of the "
        "same container (compose.app_memory or compose.nginx_memory), else none")


class ResourcesSettings(BaseModel):
    model_config = Strict

    app: ContainerResources = ContainerResources.model_validate(
        {"cpu_request": 0.25, "memory_request": "256m"})
    nginx: ContainerResources = ContainerResources.model_validate(
        {"cpu_request": 0.05, "memory_request": "32m"})


class IngressSettings(BaseModel):
    model_config = Strict

    enabled: bool = Field(False, description="true or false: render an Ingress "
                          "(networking.k8s.io/v1) in front of the Service")
    host: str = Field(
        "", description='host name the Ingress routes (e.g. "app.example.com"); "" routes every '
        "host; must be one of nginx.server_names when those are set")
    tls_secret: str = Field(
        "", description='name of a kubernetes.io/tls Secret holding the certificate for host; '
        '"" serves plain HTTP (TLS ends at the Ingress, never in the pod)')
    class_name: str = Field(
        "", description='ingressClassName (e.g. "nginx"); "" uses the cluster\'s default class')
    annotations: dict[Annotated[str, Field(pattern=ANNOTATION_KEY)], str] = Field(
        {}, description="annotations for the Ingress controller, NAME = VALUE, e.g. "
        '"nginx.ingress.kubernetes.io/proxy-read-timeout" = "3600" for long WebSockets')

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value and not (HOSTNAME.fullmatch(value) and not value.startswith(".")
                          and not value.endswith(".*")):
            raise ValueError(f"{value!r} is not a host name such as app.example.com or "
                             "*.example.com")
        return value

    @field_validator("tls_secret", "class_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", value):
            raise ValueError(f"{value!r} is not a Kubernetes object name (lowercase letters, "
                             "digits, - and .)")
        return value

    @model_validator(mode="after")
    def _tls_needs_host(self) -> IngressSettings:
        if self.tls_secret and not self.host:
            raise ValueError(f"tls_secret = {self.tls_secret!r} needs a host: the certificate "
                             "is served for kubernetes.ingress.host; set host (e.g. "
                             '"app.example.com") or tls_secret = ""')
        return self


class AutoscalingSettings(BaseModel):
    model_config = Strict

    enabled: bool = Field(True, description="true or false: render a HorizontalPodAutoscaler "
                          "(autoscaling/v2) that sets the replica count; false: "
                          "kubernetes.replicas pods")
    min_replicas: int = Field(2, ge=1, le=1000, description="fewest pods, 1-1000 (2 or more "
                              "keeps the app up while one pod is replaced)")
    max_replicas: int = Field(10, ge=1, le=1000, description="most pods, 1-1000, at least "
                              "min_replicas")
    target_cpu_percent: int = Field(
        70, ge=1, le=400, description="average CPU use, in percent of the pod's CPU requests, "
        "that the autoscaler aims for, 1-400")

    @model_validator(mode="after")
    def _order(self) -> AutoscalingSettings:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas = {self.max_replicas} is below min_replicas = "
                             f"{self.min_replicas}; raise max_replicas or lower min_replicas")
        return self


class DisruptionBudgetSettings(BaseModel):
    model_config = Strict

    min_available: int | str | None = Field(
        None, description='pods that must stay up during a voluntary disruption (a node drain), '
        'a count or a percentage such as "50%"; set this or max_unavailable, not both')
    max_unavailable: int | str | None = Field(
        None, description='pods a voluntary disruption may take down at once, a count or a '
        'percentage such as "25%"; unset with min_available unset: 1')

    @field_validator("min_available", "max_unavailable")
    @classmethod
    def _count(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and not PERCENT.fullmatch(value):
            raise ValueError(f"{value!r} is neither a count nor a percentage such as \"25%\"")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"{value} is negative; use a count of 0 or more")
        return value

    @model_validator(mode="after")
    def _one(self) -> DisruptionBudgetSettings:
        if self.min_available is not None and self.max_unavailable is not None:
            raise ValueError(f"min_available = {self.min_available!r} and max_unavailable = "
                             f"{self.max_unavailable!r} are both set; a PodDisruptionBudget "
                             "takes one of them: remove the other")
        return self


class ProbeSettings(BaseModel):
    model_config = Strict

    readiness_period: int = Field(5, ge=1, le=300, description="seconds between readiness "
                                  "probes (GET app.health_path through nginx), 1-300")
    readiness_failures: int = Field(2, ge=1, le=30, description="failed readiness probes in a "
                                    "row that take the pod out of the Service, 1-30")
    liveness_period: int = Field(10, ge=1, le=300, description="seconds between liveness probes "
                                 "(GET app.health_path on the server's socket), 1-300")
    liveness_failures: int = Field(3, ge=1, le=30, description="failed liveness probes in a row "
                                   "after which the kubelet restarts the app container, 1-30")
    startup_period: int = Field(2, ge=1, le=60, description="seconds between startup probes, "
                                "1-60")
    startup_timeout: int = Field(
        60, ge=1, le=3600, description="seconds a new pod may take to answer its health path "
        "through nginx before the kubelet restarts it, 1-3600")
    timeout: int = Field(3, ge=1, le=60, description="seconds one probe may take, 1-60")


class KubernetesSettings(BaseModel):
    model_config = Strict

    name: str | None = Field(
        None, pattern=DNS_1035, description="name of the Deployment, Service and the rest "
        "(lowercase letters, digits and -, starting with a letter, at most 42 characters); "
        "unset: compose.project_name")
    namespace: str = Field("default", pattern=DNS_LABEL, description="namespace of every "
                           "object (it must exist)")
    replicas: int = Field(2, ge=0, le=1000, description="pods when autoscaling is off, 0-1000; "
                          "with kubernetes.autoscaling.enabled the autoscaler sets the count, "
                          "and setting this is an error")
    app_image: str | None = Field(
        None, pattern=r"[a-z0-9][a-z0-9._/:@-]*", description="image of the app server "
        "container, as pushed to your registry; unset: compose.app_image")
    nginx_image: str | None = Field(
        None, pattern=r"[a-z0-9][a-z0-9._/:@-]*", description="image of the nginx container; "
        "unset: compose.nginx_image")
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        "IfNotPresent", description="IfNotPresent, Always or Never")
    nginx_port: int = Field(
        8080, ge=1024, le=65535, description="port nginx listens on in the pod, 1024-65535: nginx "
        "runs as www-data with every capability dropped, so it cannot bind a port below 1024; "
        "the Service maps port 80 to it")
    prestop_sleep: int = Field(
        10, ge=1, le=300, description="seconds nginx keeps serving after the pod is told to stop "
        "(its readiness probe answers 503 meanwhile), so that Services, kube-proxy and Ingress "
        "controllers drop the pod before nginx stops accepting, 1-300")
    app_stop_delay: int = Field(
        5, ge=1, le=300, description="seconds between nginx's graceful stop (SIGQUIT) and the "
        "app server's (SIGTERM): nginx hands the requests it has read to the app first, 1-300")
    termination_grace_period: int | None = Field(
        None, ge=1, le=7200, description="terminationGracePeriodSeconds: seconds from the stop "
        "request to SIGKILL, covering preStop and the graceful stops, 1-7200; unset: "
        "prestop_sleep + app_stop_delay + server.graceful_timeout + 5")
    resources: ResourcesSettings = ResourcesSettings.model_validate({})
    ingress: IngressSettings = IngressSettings.model_validate({})
    autoscaling: AutoscalingSettings = AutoscalingSettings.model_validate({})
    disruption_budget: DisruptionBudgetSettings = DisruptionBudgetSettings.model_validate({})
    probes: ProbeSettings = ProbeSettings.model_validate({})

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> KubernetesSettings:
        if self.autoscaling.enabled and "replicas" in self.model_fields_set:
            raise ValueError(
                f"replicas = {self.replicas} is set, but kubernetes.autoscaling.enabled = true "
                "lets the HorizontalPodAutoscaler set the count (a fixed count in the Deployment "
                "would undo its decision at every `kubectl apply`); remove replicas and use "
                "autoscaling.min_replicas, or set autoscaling.enabled = false")
        return self
