"""The CAS-IQA agent: assessment command line, and (later) the LangGraph flow."""
